"""Silences: label matchers that mute notifications for a while, kept in the data dir.

Why a JSON file: people create silences from the command line while a notifier runs in
another process; a small file both can read is enough, and the notifier picks changes
up by its modification time. Every write goes to a temporary file that is fsynced and
renamed over the old one, under an exclusive lock, so a reader never sees half a file
and two writers never lose each other's silence. Expiring a silence sets its end to
now (as Alertmanager does), so the list keeps what was muted and when; silences that
ended more than ``RETENTION`` ago are dropped on the next write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentwatch.alerts.notify.routing import Matcher, RoutingError, matches_all

SILENCES_FILE = "silences.json"
RETENTION = dt.timedelta(days=5)
SilenceState = Literal["pending", "active", "expired"]


class SilenceError(ValueError):
    """A silence that cannot be created, found or read."""


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_by: str
    comment: str
    created_at: dt.datetime

    def state(self, now: dt.datetime) -> SilenceState:
        if now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def mutes(self, labels: Mapping[str, str], now: dt.datetime) -> bool:
        return self.state(now) == "active" and matches_all(self.matchers, labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(doc["id"]),
            matchers=tuple(Matcher.parse(m) for m in doc["matchers"]),
            starts_at=_ts(doc["starts_at"]),
            ends_at=_ts(doc["ends_at"]),
            created_by=str(doc.get("created_by", "")),
            comment=str(doc.get("comment", "")),
            created_at=_ts(doc.get("created_at", doc["starts_at"])),
        )


def _ts(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class SilenceStore:
    """The silences of one data dir; reads are cached until the file changes."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SILENCES_FILE
        self._cache: list[Silence] = []
        self._stamp: tuple[int, int] | None = None

    def all(self) -> list[Silence]:
        """Every stored silence, newest first (re-read only when the file changed)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._cache, self._stamp = [], None
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._cache = self._read()
            self._stamp = stamp
        return list(self._cache)

    def _read(self) -> list[Silence]:
        try:
            doc = json.loads(self.path.read_text())
            silences = [Silence.from_json(s) for s in doc["silences"]]
        except (OSError, ValueError, KeyError, TypeError, RoutingError) as exc:
            raise SilenceError(f"{self.path}: cannot read silences: {exc}") from None
        return sorted(silences, key=lambda s: s.created_at, reverse=True)

    def muting(self, labels: Mapping[str, str], now: dt.datetime) -> list[Silence]:
        """The active silences that mute an alert with these labels."""
        return [s for s in self.all() if s.mutes(labels, now)]

    def add(
        self,
        matchers: Sequence[Matcher],
        *,
        starts_at: dt.datetime,
        ends_at: dt.datetime,
        created_by: str,
        comment: str,
        now: dt.datetime,
    ) -> Silence:
        if not matchers:
            raise SilenceError("a silence needs at least one matcher")
        if all(m.matches({}) for m in matchers):
            raise SilenceError(
                "these matchers also match an alert with no labels, so they would mute "
                "everything; add a matcher that needs a label value"
            )
        if ends_at <= starts_at:
            raise SilenceError("a silence must end after it starts")
        silence = Silence(
            id=uuid.uuid4().hex[:12],
            matchers=tuple(matchers),
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            created_at=now,
        )
        with self._locked() as current:
            current.append(silence)
            self._write(current, now)
        return silence

    def expire(self, silence_id: str, now: dt.datetime) -> Silence:
        """End a silence now; ``silence_id`` may be a unique prefix of the id."""
        with self._locked() as current:
            found = [s for s in current if s.id.startswith(silence_id)] if silence_id else []
            if not found:
                raise SilenceError(f"no silence {silence_id!r}")
            if len(found) > 1:
                raise SilenceError(f"{silence_id!r} is the start of several silence ids")
            old = found[0]
            if old.state(now) == "expired":
                raise SilenceError(f"silence {old.id} has already expired")
            new = Silence(
                id=old.id,
                matchers=old.matchers,
                starts_at=min(old.starts_at, now),
                ends_at=now,
                created_by=old.created_by,
                comment=old.comment,
                created_at=old.created_at,
            )
            current[current.index(old)] = new
            self._write(current, now)
        return new

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Silence]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._read() if self.path.exists() else []
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, silences: list[Silence], now: dt.datetime) -> None:
        kept = [s for s in silences if s.ends_at > now - RETENTION]
        kept.sort(key=lambda s: s.created_at)
        doc = {"version": 1, "silences": [s.to_json() for s in kept]}
        tmp = self.path.with_name(f".tmp-{uuid.uuid4().hex}-{self.path.name}")
        with tmp.open("w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
