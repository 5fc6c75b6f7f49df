"""The freshness bench's live load: simulated events, paced as they are sent.

``payload_file`` writes distinct events a line each, keyed by session as the SDK sends
them; ``Pacer`` feeds them to Kafka's console producer at a steady rate, so the load
never comes in a burst above it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from agentwatch.ingest.contract.events import SessionEnd
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents

PACE_TICK_S = 0.01
_IDS = re.compile(rb'"(event_id|session_id)":"([^"]*)"')
_KEY = re.compile(rb"^([^\t\n]*)\t", re.MULTILINE)  # a line's key: its session id


def payload_file(path: Path, events: int, rate: float) -> int:
    """Write at least ``events`` distinct simulated events for the console producer: a
    line each, its session id (the key the SDK sends it with, so a session's events
    share a partition), a tab and the event's JSON. The fleet's clock runs at ``rate``
    events a second, as sent. Returns the events written.

    Only whole sessions are written, each from its start to its end: the file is sent
    again and again (``Pacer``), and a session cut off by the file's end would stay open
    in the processor each time round, which a fleet's sessions do not.
    """
    fleet = Fleet(make_agents(16, seed=7), seed=7, start=time.time(), events_per_second=rate)
    encode = msgspec.json.Encoder().encode
    per_session: dict[bytes, int] = {}
    ended: set[bytes] = set()
    whole = 0  # events of the sessions ended so far
    horizon = fleet.start
    generated = path.with_name(path.name + ".all")
    with generated.open("wb") as out:
        while whole < events:
            horizon += 1.0
            lines = []
            for event in fleet.events_until(horizon):
                key = event.session_id.encode()
                per_session[key] = per_session.get(key, 0) + 1
                if isinstance(event, SessionEnd):
                    ended.add(key)
                    whole += per_session[key]
                lines.append(key + b"\t" + encode(event) + b"\n")
            out.write(b"".join(lines))
    written = 0
    with generated.open("rb") as lines_in, path.open("wb") as out:
        for line in lines_in:
            if line.split(b"\t", 1)[0] in ended:
                out.write(line)
                written += 1
    generated.unlink()
    return written


class Pacer(threading.Thread):
    """Writes ``rate`` lines a second of the payload file to a producer's input, a tick's
    worth every ``PACE_TICK_S``, without making up a tick it fell behind on. At the end of
    the file it starts again with new event and session ids (``~1``, ``~2``, ...; their
    times repeat, so a run that long has late events)."""

    def __init__(self, out: IO[bytes], payloads: Path, rate: float) -> None:
        super().__init__(daemon=True)
        self.out, self.payloads, self.rate = out, payloads, rate
        self.sent = 0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        lines = self._lines()
        owed = 0.0
        last = time.monotonic()
        try:
            while not self._stop_event.wait(PACE_TICK_S):
                now = time.monotonic()
                owed = min(owed + (now - last) * self.rate, 2 * PACE_TICK_S * self.rate)
                last = now
                n = int(owed)
                owed -= n
                self.out.write(b"".join(next(lines) for _ in range(n)))
                self.out.flush()
                self.sent += n
        except (BrokenPipeError, ValueError):  # the producer ended
            return

    def _lines(self) -> Iterator[bytes]:
        """The payload file's lines, again and again, with new ids each time round."""
        round_ = 0
        while True:
            with self.payloads.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    *whole, rest = block.split(b"\n")
                    if rest:  # a line cut by the block: read up to its end
                        whole.append(rest + file.readline().rstrip(b"\n"))
                    text = b"\n".join(whole) + b"\n"
                    if round_:
                        text = _IDS.sub(rb'"\1":"\2~%d"' % round_, text)
                        text = _KEY.sub(rb"\1~%d\t" % round_, text)
                    yield from text.splitlines(keepends=True)
            round_ += 1
