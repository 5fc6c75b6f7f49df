"""Extension signatures: checked by DuckDB the first time a file is loaded, and again
whenever the file changes; a record others could write is never trusted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from agentwatch.processors.store import extensions

NAME = "sqlite_scanner"


@pytest.fixture
def ext_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private extension directory holding a genuine copy of one extension."""
    genuine = _target(extensions.extension_dir())
    if not genuine.exists():  # placed by the first lake any test attached
        con = duckdb.connect(config=extensions.config())
        extensions.load(con, (NAME,))
        con.close()
    folder = tmp_path / "extensions"
    copy = _target(folder)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(genuine, copy)
    monkeypatch.setenv(extensions.EXTENSION_DIR_ENV, str(folder))
    monkeypatch.delenv(extensions.VERIFY_ENV, raising=False)
    return folder


def _target(folder: Path) -> Path:
    platform = duckdb.execute("PRAGMA platform").fetchone()
    assert platform is not None
    return folder / f"v{duckdb.__version__}" / str(platform[0]) / f"{NAME}.duckdb_extension"


_LOAD = """
import duckdb
from agentwatch.processors.store import extensions
con = duckdb.connect(config=extensions.config())
extensions.load(con, ({name!r},))
"""


def _load() -> None:
    """Load the extension as a new process does (one library file per process: loading
    two copies of one extension into a process crashes it)."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD.format(name=NAME)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ExtensionLoadFailed(done.stderr.strip().splitlines()[-1])


class ExtensionLoadFailed(Exception):
    """The child's last line of error."""


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_verified_extension_is_recorded_in_a_manifest_only_its_owner_can_write(
    ext_dir: Path,
) -> None:
    _load()
    manifest = _target(ext_dir).parent / extensions.MANIFEST
    assert _target(ext_dir).name in json.loads(manifest.read_text())
    assert manifest.stat().st_mode & 0o077 == 0


def test_an_extension_changed_after_its_check_is_refused(ext_dir: Path) -> None:
    _load()
    _tamper(_target(ext_dir))
    with pytest.raises(ExtensionLoadFailed, match="signature"):
        _load()


def test_a_manifest_others_can_write_is_not_trusted(ext_dir: Path) -> None:
    target = _target(ext_dir)
    _tamper(target)
    st = target.stat()
    forged = {target.name: [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]}
    manifest = target.parent / extensions.MANIFEST
    manifest.write_text(json.dumps(forged))
    manifest.chmod(0o666)
    with pytest.raises(ExtensionLoadFailed, match="signature"):
        _load()


def test_every_load_is_verified_when_the_operator_asks(
    ext_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(extensions.VERIFY_ENV, "always")
    assert extensions.config()["allow_unsigned_extensions"] is False
    _load()
    assert not (_target(ext_dir).parent / extensions.MANIFEST).exists()


def test_an_unknown_verification_mode_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(extensions.VERIFY_ENV, "sometimes")
    with pytest.raises(extensions.ExtensionError, match=extensions.VERIFY_ENV):
        extensions.config()
