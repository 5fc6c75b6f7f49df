"""The DuckDB extensions the lake needs, loaded offline from PyPI packages or installed online.

DuckLake, its SQLite and PostgreSQL catalogs and S3 data paths are DuckDB extensions.
Installed with agentwatch, the ``duckdb-extension-*`` PyPI packages carry DuckDB's own
signed binaries: they are copied once into an extension directory under the names
DuckDB looks for (the SQLite one becomes ``sqlite_scanner``) and loaded from there, so
attaching a lake never reaches the network. DuckDB still checks each signature on
``LOAD``; unsigned extensions are never allowed. Without those packages, DuckDB's own
``INSTALL`` fetches the same binaries from its repository.

Auto-install and auto-load stay off: an ``ATTACH`` would otherwise try to download.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path
from typing import Final

import duckdb

# The canonical name DuckDB loads, by the PyPI package that ships it.
PACKAGES: Final = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
}
# The file name inside each package, where it differs from the canonical name.
_SHIPPED_AS: Final = {"sqlite_scanner": "sqlite"}
EXTENSION_DIR_ENV: Final = "AGENTWATCH_DUCKDB_EXTENSIONS"

_lock = threading.Lock()
_ready: set[str] = set()


class ExtensionError(RuntimeError):
    """An extension is neither packaged nor installable: says what to install."""


def extension_dir() -> Path:
    """Where the extensions are kept: ``$AGENTWATCH_DUCKDB_EXTENSIONS`` or the user cache."""
    configured = os.environ.get(EXTENSION_DIR_ENV)
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "agentwatch" / "duckdb-extensions"


def config() -> dict[str, str | bool | int | float | list[str]]:
    """Connection settings that keep DuckDB from fetching anything on its own."""
    return {
        "extension_directory": str(extension_dir()),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }


def load(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """Load each extension into ``con``, placing or installing it first if needed."""
    for name in names:
        with _lock:
            if name not in _ready:
                _place(con, name)
                _ready.add(name)
        con.execute(f"LOAD {name}")


def _place(con: duckdb.DuckDBPyConnection, name: str) -> None:
    version = duckdb.__version__
    platform = con.execute("PRAGMA platform").fetchone()
    assert platform is not None
    target = extension_dir() / f"v{version}" / str(platform[0]) / f"{name}.duckdb_extension"
    if target.exists():
        return
    shipped = _packaged(name, version)
    if shipped is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(shipped, tmp)
        os.replace(tmp, target)  # several processes may place it at once
        return
    try:
        con.execute(f"INSTALL {name}")
    except duckdb.Error as exc:
        raise ExtensionError(
            f"the DuckDB extension {name} is not installed and could not be downloaded "
            f"({exc}); install the PyPI package {PACKAGES[name].replace('_', '-')}=={version}"
        ) from exc


def _packaged(name: str, version: str) -> Path | None:
    spec = importlib.util.find_spec(PACKAGES[name])
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(
        root.glob(f"extensions/v{version}/{_SHIPPED_AS.get(name, name)}.duckdb_extension")
    )
    return found[0] if found else None
