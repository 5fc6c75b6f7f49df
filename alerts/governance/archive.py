"""Evidence archives: everything the store knows about one agent, sealed with digests.

Retiring an agent writes its events, sessions, alerts, actions, notifications, drift
scores, registry history, releases and access reviews as one Parquet file per table into
a folder of its own, with ``manifest.json`` listing each file's row count, size and
SHA-256 digest, and the digest of the manifest itself in the retirement's registry
record. The folder sits outside the segment store (``archive/`` beside it), so nothing
that prunes or compacts segments touches it: it is kept past the data's retention.

:func:`verify_archive` re-reads every file and reports each one whose bytes, digest or
row count differ from the manifest, files missing, and files the manifest does not list:
any edit after the archive was written shows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from agentwatch.frames import query
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.settings import ConfigError

MANIFEST: Final = "manifest.json"
FORMAT_VERSION: Final = 1

# table name in the archive -> the query over the store's views (one parameter: the agent).
# Notifications name alerts, not agents: they are the ones that carried one of its alerts.
ARCHIVE_QUERIES: Final[Mapping[str, str]] = {
    "events": "SELECT * FROM events WHERE agent_id = $agent ORDER BY ts",
    "sessions": "SELECT * FROM sessions WHERE agent_id = $agent",
    "alert_events": "SELECT * FROM alert_events WHERE agent_id = $agent ORDER BY ts",
    "actions": "SELECT * FROM actions WHERE agent_id = $agent ORDER BY ts",
    "notifications": (
        "SELECT n.* FROM notifications n WHERE EXISTS (SELECT 1 FROM alert_events a "
        "WHERE a.agent_id = $agent AND contains(n.alert_fingerprints, a.fingerprint)) "
        "ORDER BY n.ts"
    ),
    "drift_scores": "SELECT * FROM drift_scores WHERE agent_id = $agent ORDER BY ts",
    "catalog_changes": "SELECT * FROM catalog_changes WHERE agent_id = $agent ORDER BY ts",
    "releases": "SELECT * FROM releases WHERE agent_id = $agent ORDER BY ts",
    "access_reviews": "SELECT * FROM access_reviews WHERE agent_id = $agent ORDER BY ts",
}


class ArchiveError(ConfigError):
    """An archive that cannot be written or read; the message names the path."""


class ArchivedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    table: str
    rows: int
    bytes: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    agent_id: str
    created_at: dt.datetime
    reason: str
    actor: str
    files: tuple[ArchivedFile, ...]


@dataclass(frozen=True)
class Written:
    path: Path
    manifest: Manifest
    manifest_sha256: str


@dataclass(frozen=True)
class Verdict:
    """What ``archive verify`` found: no problems means the archive is intact."""

    path: Path
    manifest: Manifest | None
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return self.manifest is not None and not self.problems


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_archive(
    db: Path, agent_id: str, folder: Path, *, reason: str, actor: str, now: dt.datetime
) -> Written:
    """Export the agent's rows of every table into ``folder`` and seal them."""
    if folder.exists() and any(folder.iterdir()):
        raise ArchiveError(f"{folder}: the archive folder exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    con = connect_lake(db)
    try:
        for table, sql in ARCHIVE_QUERIES.items():
            frame = query(con, sql, {"agent": agent_id})
            path = folder / f"{table}.parquet"
            frame.write_parquet(path)
            files.append(
                ArchivedFile(path.name, table, frame.height, path.stat().st_size, sha256_file(path))
            )
    finally:
        con.close()
    manifest = Manifest(FORMAT_VERSION, agent_id, now, reason, actor, tuple(files))
    data = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / MANIFEST)
    return Written(folder, manifest, hashlib.sha256(data).hexdigest())


def verify_archive(folder: Path, expected_manifest_sha256: str | None = None) -> Verdict:
    """Check every file against the manifest (and the manifest against a known digest)."""
    manifest_path = folder / MANIFEST
    try:
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read {manifest_path}: {exc.strerror}") from None
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        return Verdict(folder, None, (f"{manifest_path}: not a valid manifest: {exc}",))
    problems: list[str] = []
    if expected_manifest_sha256 and hashlib.sha256(data).hexdigest() != expected_manifest_sha256:
        problems.append(f"{MANIFEST}: digest differs from the one recorded at retirement")
    listed = {f.name for f in manifest.files}
    for f in manifest.files:
        path = folder / f.name
        if not path.is_file():
            problems.append(f"{f.name}: missing")
            continue
        digest = sha256_file(path)
        if digest != f.sha256:
            problems.append(f"{f.name}: SHA-256 {digest[:12]}... differs from the manifest's")
            continue
        try:
            rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        except Exception as exc:
            problems.append(f"{f.name}: unreadable Parquet: {exc}")
            continue
        if rows != f.rows:
            problems.append(f"{f.name}: {rows} rows, the manifest says {f.rows}")
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST and path.name not in listed:
            problems.append(f"{path.name}: not listed in the manifest")
    return Verdict(folder, manifest, tuple(problems))


def manifest_json(manifest: Manifest) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(msgspec.json.encode(manifest))
    return doc
