"""The freshness benchmark's load: new events at a steady rate, never a burst."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import msgspec

from bench.load import PACE_TICK_S, Pacer, payload_file


class _Sink(io.RawIOBase):
    """A producer's input that remembers what was written and says when enough came."""

    def __init__(self, wanted: int) -> None:
        self.data = b""
        self.wanted = wanted
        self.writes: list[int] = []  # lines in each write
        self.enough = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += bytes(b)
        if self.data.count(b"\n") >= self.wanted:
            self.enough.set()
        return len(b)


def _payloads(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "payloads.ndjson"
    lines = [
        f"s{i}\t".encode()
        + msgspec.json.encode({"kind": "tool_call", "event_id": f"e{i}", "session_id": f"s{i}"})
        for i in range(n)
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_the_load_sends_the_file_in_order_then_again_with_new_ids_and_keys(tmp_path: Path) -> None:
    sink = _Sink(wanted=7)
    pacer = Pacer(sink, _payloads(tmp_path, 3), rate=2000)  # type: ignore[arg-type]
    pacer.start()
    assert sink.enough.wait(10)
    pacer.stop()
    lines = [line.split(b"\t") for line in sink.data.splitlines()]
    sent = [msgspec.json.decode(value) for _, value in lines]
    assert [e["event_id"] for e in sent[:7]] == ["e0", "e1", "e2", "e0~1", "e1~1", "e2~1", "e0~2"]
    assert [e["session_id"] for e in sent[3:6]] == ["s0~1", "s1~1", "s2~1"]
    assert [key for key, _ in lines[3:6]] == [b"s0~1", b"s1~1", b"s2~1"]  # the same session
    assert pacer.sent == len(sent)


def test_a_stalled_producer_is_not_sent_the_lines_it_missed_in_one_burst(tmp_path: Path) -> None:
    class Stalling(_Sink):
        """A producer that blocks its input for 0.3 s once, as a JVM warming up does."""

        def write(self, b: bytes) -> int:  # type: ignore[override]
            if not self.writes:
                time.sleep(0.3)
            self.writes.append(bytes(b).count(b"\n"))
            return super().write(b)

    sink = Stalling(wanted=200)
    rate = 1000
    pacer = Pacer(sink, _payloads(tmp_path, 50), rate=rate)  # type: ignore[arg-type]
    pacer.start()
    assert sink.enough.wait(10)
    pacer.stop()
    # 300 lines fell due during the stall; at most two ticks' worth go out at once
    assert max(sink.writes) <= 2 * PACE_TICK_S * rate


def test_every_session_in_the_payload_file_ends_in_it(tmp_path: Path) -> None:
    """The file is sent again and again: a session cut off by its end would stay open."""
    path = tmp_path / "payloads.ndjson"
    written = payload_file(path, 20_000, rate=2_000)
    started: set[str] = set()
    ended: set[str] = set()
    lines = path.read_bytes().splitlines()
    for line in lines:
        key, event = line.split(b"\t", 1)
        decoded = msgspec.json.decode(event)
        assert decoded["session_id"] == key.decode()
        if decoded["kind"] == "session_start":
            started.add(decoded["session_id"])
        elif decoded["kind"] == "session_end":
            ended.add(decoded["session_id"])
    assert written == len(lines) >= 20_000
    assert started and started <= ended
