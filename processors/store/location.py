"""Where a lake lives: its metadata database (SQLite file or PostgreSQL) and its data path.

One machine: ``--db data/agentwatch.sqlite`` names a SQLite metadata file, and the
Parquet data lives in ``lake/`` beside it. Nothing in the metadata database names an absolute
path (DuckLake stores data files relative to the data path, and agentwatch always
passes the data path it derives from the metadata database's place), so a copied or moved data dir
reads its own files.

Several machines: ``--db "postgres:dbname=agentwatch host=db"`` names a PostgreSQL
metadata database (libpq key=value, or a ``postgresql://`` URL) and ``[storage] data_path`` an
S3-compatible prefix (``s3://bucket/lake/``) or a shared folder; S3 credentials come
from the usual ``AWS_*`` environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from agentwatch.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

ALIAS: Final = "lake"
"""The name the lake is attached under in every agentwatch connection."""
METADATA_FILE: Final = "agentwatch.sqlite"
"""The SQLite metadata database's usual name in a data dir."""
DATA_FOLDER: Final = "lake"
DATA_PATH_ENV: Final = "AGENTWATCH_STORAGE_DATA_PATH"
_POSTGRES_PREFIXES: Final = ("postgres:", "postgresql:", "postgresql://", "postgres://")


@dataclass(frozen=True)
class StoreLocation:
    """A lake's metadata database and data path, and how to attach it."""

    metadata: str
    """What follows ``ducklake:``: ``sqlite:/abs/path`` or ``postgres:<dsn>``."""
    data_path: str
    """The Parquet files' root, ending in ``/``; "" for the one a PostgreSQL metadata
    database stores."""
    metadata_file: Path | None
    """The SQLite metadata file, for a lake on one machine."""

    @property
    def is_local(self) -> bool:
        return self.metadata_file is not None

    @property
    def data_dir(self) -> Path | None:
        """The local folder holding the metadata file (and, by default, the data)."""
        return None if self.metadata_file is None else self.metadata_file.parent

    @property
    def extensions(self) -> tuple[str, ...]:
        scanner = "sqlite_scanner" if self.is_local else "postgres_scanner"
        remote = ("httpfs",) if self.data_path.startswith(("s3://", "http")) else ()
        return ("ducklake", scanner, *remote)

    def attach_sql(self, *, read_only: bool, alias: str = ALIAS, retries_busy: bool = False) -> str:
        """The ``ATTACH`` statement; a local metadata database always gets its data path from
        its place. A writer, and a reader that ``retries_busy``, retry what a busy SQLite
        metadata database refused (:func:`attach.is_busy`)."""
        options = []
        if self.data_path:
            options.append(f"DATA_PATH {_sql_str(self.data_path)}")
            if self.is_local:
                options.append("OVERRIDE_DATA_PATH TRUE")
        if read_only:
            options.append("READ_ONLY")
        if (retries_busy or not read_only) and self.metadata_file is not None:
            # The SQLite inside DuckDB's sqlite extension waits out a busy database in
            # whole seconds (it is built without usleep), and each of its connections
            # makes the database busy for an instant as it closes: a statement would
            # stall a second now and then. It fails at once instead, and the writer
            # (lake.py) and the sandbox retry it within milliseconds.
            options.append("META_BUSY_TIMEOUT 0")
        suffix = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {_sql_str('ducklake:' + self.metadata)} AS {alias}{suffix}"

    def describe(self) -> str:
        """For messages: the metadata file, or the PostgreSQL database without secrets."""
        if self.metadata_file is not None:
            return str(self.metadata_file)
        return "PostgreSQL metadata database " + _redact_dsn(self.metadata.split(":", 1)[1])


_configured = {"data_path": ""}


def configure(data_path: str) -> None:
    """Set the process's ``[storage] data_path`` (the CLI does, from its settings)."""
    _configured["data_path"] = data_path


def configured_data_path() -> str:
    """What :func:`configure` set: handed to worker processes, which start afresh."""
    return _configured["data_path"]


def locate(db: str | Path, data_path: str = "") -> StoreLocation:
    """The lake named by ``--db`` (a SQLite metadata file or a PostgreSQL DSN)."""
    text = str(db)
    data_path = data_path or _configured["data_path"] or os.environ.get(DATA_PATH_ENV, "")
    if text.startswith(_POSTGRES_PREFIXES):
        dsn = text if "://" in text else text.split(":", 1)[1]
        return StoreLocation(f"postgres:{dsn}", _folder(data_path) if data_path else "", None)
    metadata_file = Path(text).expanduser().resolve()
    if data_path and "://" not in data_path:
        data_path = str(Path(data_path).expanduser().resolve())
    return StoreLocation(
        f"sqlite:{metadata_file}",
        _folder(data_path or str(metadata_file.parent / DATA_FOLDER)),
        metadata_file,
    )


def create_s3_secret(con: duckdb.DuckDBPyConnection, location: StoreLocation) -> None:
    """Give DuckDB the S3 credentials and endpoint of an ``s3://`` data path, from ``AWS_*``."""
    if not location.data_path.startswith("s3://"):
        return
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise ConfigError(
            f"the data path {location.data_path} is on S3: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server other than AWS)"
        )
    parts = [f"KEY_ID {_sql_str(key_id)}", f"SECRET {_sql_str(secret)}"]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        parts.append(f"REGION {_sql_str(region)}")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlsplit(endpoint)
        parts += [
            f"ENDPOINT {_sql_str(url.netloc or url.path)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if url.scheme == 'https' else 'false'}",
        ]
    con.execute(f"CREATE OR REPLACE SECRET agentwatch_s3 (TYPE s3, {', '.join(parts)})")


def _folder(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _redact_dsn(dsn: str) -> str:
    if "://" in dsn:
        url = urlsplit(dsn)
        host = url.hostname or ""
        return f"{url.scheme}://{host}{':' + str(url.port) if url.port else ''}{url.path}"
    kept = [p for p in dsn.split() if not p.lower().startswith("password=")]
    return " ".join(kept)
