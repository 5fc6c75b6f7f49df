"""Real services for the multi-machine lake: PostgreSQL as the catalog, S3 (moto) as data path.

- ``postgres_server``: a PostgreSQL from Debian's packages (``initdb`` and ``pg_ctl`` of
  ``/usr/lib/postgresql/*/bin``) in a temporary directory on a free loopback port, with
  password authentication, for the whole session. Run as root (as CI does), the server
  runs as the ``postgres`` user (or ``nobody``), since PostgreSQL refuses root.
- ``postgres_db``: a fresh database on that server for one test, as a ``postgres:`` DSN.
- ``s3_server``: moto's server mode (from PyPI) on a free loopback port, with one bucket;
  a test double for an S3 endpoint (it keeps everything in memory).
- ``s3_data_path``: a fresh ``s3://`` prefix for one test, with the ``AWS_*`` environment
  set so that this process and the commands it starts reach the endpoint.

Outside CI the PostgreSQL tests skip when PostgreSQL is not installed; under CI they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentwatch.broker.ports import free_port
from tests.conftest import require_tool

PG_USER = "agentwatch"
PG_PASSWORD = "lake-test-password"
S3_BUCKET = "agentwatch-lake"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's server programs, or the ones on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    port: int
    run_as: str | None

    def dsn(self, dbname: str, *, with_password: bool = True) -> str:
        """The libpq key=value DSN ``--db postgres:...`` takes (the password may come from
        ``PGPASSWORD`` instead)."""
        dsn = f"dbname={dbname} host=127.0.0.1 port={self.port} user={PG_USER}"
        return f"{dsn} password={PG_PASSWORD}" if with_password else dsn

    def create_database(self, name: str) -> None:
        subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", PG_USER, name],
            env={**os.environ, "PGPASSWORD": PG_PASSWORD},
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip


def _server_user() -> str | None:
    """PostgreSQL will not run as root: whom to run it as then."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("running as root, and neither a postgres nor a nobody user exists")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped and deleted at the end."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        require_tool("initdb")  # skips outside CI, fails in CI
        raise AssertionError("unreachable")
    user = _server_user()
    # Under /tmp, not pytest's private tmp dirs, which another user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="agentwatch-pg-"))
    data, pwfile, logfile = root / "data", root / "pwfile", root / "server.log"
    pwfile.write_text(PG_PASSWORD + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bin_dir, free_port(), user)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=120, user=user,
    )  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories={root} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(logfile), "-w", "-t", "60", "start"],
        capture_output=True, text=True, timeout=90, user=user,
    )  # fmt: skip
    try:
        if started.returncode != 0:
            log = logfile.read_text(errors="replace") if logfile.exists() else ""
            pytest.fail(f"PostgreSQL did not start: {started.stderr}{log[-2000:]}")
        yield server
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=60, user=user
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for one test: what ``--db`` takes (``postgres:<dsn>``)."""
    name = f"lake_{uuid.uuid4().hex[:10]}"
    postgres_server.create_database(name)
    return "postgres:" + postgres_server.dsn(name)


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the bucket (``location.create_s3_secret`` reads it)."""
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def object_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (moto answers unsigned list requests)."""
        import xml.etree.ElementTree as ET

        keys: list[str] = []
        token = ""
        while True:
            query = f"list-type=2&prefix={prefix}" + (
                f"&continuation-token={token}" if token else ""
            )
            with urllib.request.urlopen(f"{self.endpoint}/{S3_BUCKET}?{query}", timeout=30) as r:
                tree = ET.fromstring(r.read())
            ns = {"s3": tree.tag.split("}")[0].strip("{")}
            keys += [k.text or "" for k in tree.findall("s3:Contents/s3:Key", ns)]
            next_token = tree.find("s3:NextContinuationToken", ns)
            if next_token is None or not next_token.text:
                return keys
            token = urllib.parse.quote(next_token.text)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the session, with the bucket ``S3_BUCKET``; stopped at the end."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not _answers(f"{endpoint}/"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"moto's S3 server did not start: {log.read()[-2000:]!r}")
                time.sleep(0.1)
            request = urllib.request.Request(f"{endpoint}/{S3_BUCKET}", method="PUT")
            with urllib.request.urlopen(request, timeout=30):
                pass
            yield S3Server(endpoint)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def s3_data_path(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``s3://`` data path for one test; the ``AWS_*`` environment points at moto."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:10]}/"
