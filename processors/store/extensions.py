"""The DuckDB extensions the lake needs, loaded offline from PyPI packages or installed online.

DuckLake, its SQLite and PostgreSQL metadata databases and S3 data paths are DuckDB extensions.
Installed with agentwatch, the ``duckdb-extension-*`` PyPI packages carry DuckDB's own
signed binaries: they are copied once into an extension directory under the names
DuckDB looks for (the SQLite one becomes ``sqlite_scanner``) and loaded from there, so
attaching a lake never reaches the network. Without those packages, DuckDB's own
``INSTALL`` fetches the same binaries from its repository.

Signatures: DuckDB checks an extension's signature by hashing its whole file, about
0.15 s of CPU for each of the 35 MB binaries, paid by every process that attaches a lake
(half of ``agentwatch sql``'s start). So each file is verified by DuckDB's own check the
first time it is loaded, on a throwaway connection that allows signed extensions only,
and its identity (device, inode, size, modification and change times) is then recorded
in a manifest beside it. Later loads of a file whose identity is unchanged skip the
repeated check; a file written or replaced since gets a new change time, which no
unprivileged process can set back, and is verified again. The trust is that of the
user's own files: the directory and manifest must belong to the user and be writable by
no one else, or every load is verified. ``AGENTWATCH_VERIFY_EXTENSIONS=always`` verifies
on every load.

Auto-install and auto-load stay off: an ``ATTACH`` would otherwise try to download.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
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
VERIFY_ENV: Final = "AGENTWATCH_VERIFY_EXTENSIONS"
VERIFY_MODES: Final = ("on-change", "always")
MANIFEST: Final = "verified.json"

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


def verify_always() -> bool:
    """Whether every load is to be verified (``AGENTWATCH_VERIFY_EXTENSIONS``)."""
    mode = os.environ.get(VERIFY_ENV, "on-change").strip().lower() or "on-change"
    if mode not in VERIFY_MODES:
        raise ExtensionError(f"{VERIFY_ENV}={mode!r}: expected one of {', '.join(VERIFY_MODES)}")
    return mode == "always"


def config() -> dict[str, str | bool | int | float | list[str]]:
    """Connection settings that keep DuckDB from fetching anything on its own.

    Signature checks are left to :func:`load` unless every load is to be verified: a
    connection that allows unsigned extensions still loads only what ``load`` vouched for,
    since auto-loading is off and the analysts' sandbox refuses ``LOAD``.
    """
    return {
        "extension_directory": str(extension_dir()),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_unsigned_extensions": not verify_always(),
    }


def load(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """Load each extension into ``con``, placing or installing it and verifying its
    signature first when its file is new or changed."""
    for name in names:
        with _lock:
            if name not in _ready:
                target = _place(con, name)
                if not verify_always():
                    _vouch(target, name)
                _ready.add(name)
        con.execute(f"LOAD {name}")


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _private(path: Path) -> bool:
    """Owned by this user and writable by no one else."""
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _vouch(target: Path, name: str) -> None:
    """Have DuckDB check ``target``'s signature unless the manifest shows that this very
    file was checked before, then record it."""
    manifest = target.parent / MANIFEST
    try:
        trusted = _private(target.parent) and _private(manifest) and _private(target)
        recorded = json.loads(manifest.read_text()) if trusted else {}
    except (OSError, ValueError):
        recorded = {}
    if isinstance(recorded, dict) and recorded.get(target.name) == _identity(target):
        return
    strict = {**config(), "allow_unsigned_extensions": False}
    with duckdb.connect(config=strict) as checker:
        checker.execute(f"LOAD {name}")  # raises on a bad signature
    if not _private(target.parent):
        return  # checked for this process; nothing is recorded where others can write
    updated = recorded if isinstance(recorded, dict) else {}
    updated[target.name] = _identity(target)
    tmp = manifest.with_name(f".{MANIFEST}.{os.getpid()}")
    tmp.write_text(json.dumps(updated, sort_keys=True))
    tmp.chmod(0o600)
    os.replace(tmp, manifest)


def _place(con: duckdb.DuckDBPyConnection, name: str) -> Path:
    version = duckdb.__version__
    platform = con.execute("PRAGMA platform").fetchone()
    assert platform is not None
    target = extension_dir() / f"v{version}" / str(platform[0]) / f"{name}.duckdb_extension"
    if target.exists():
        return target
    shipped = _packaged(name, version)
    if shipped is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(shipped, tmp)
        os.replace(tmp, target)  # several processes may place it at once
        return target
    try:
        con.execute(f"INSTALL {name}")
    except duckdb.Error as exc:
        raise ExtensionError(
            f"the DuckDB extension {name} is not installed and could not be downloaded "
            f"({exc}); install the PyPI package {PACKAGES[name].replace('_', '-')}=={version}"
        ) from exc
    return target


def _packaged(name: str, version: str) -> Path | None:
    spec = importlib.util.find_spec(PACKAGES[name])
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(
        root.glob(f"extensions/v{version}/{_SHIPPED_AS.get(name, name)}.duckdb_extension")
    )
    return found[0] if found else None
