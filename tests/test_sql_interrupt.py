"""A running ``agentwatch sql`` query stops at once on Ctrl-C (SIGINT) or SIGTERM, with one
line on stderr and exit code 128 + the signal's number, never a traceback."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentwatch.processors.query.sql import query
from bench.traffic import Fleet, Profile, generate, write_store

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
ENDLESS = "SELECT sum(i) FROM range(1000000000000) t(i)"
STOPPED_WITHIN_S = 5.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    events = generate(Fleet({"hr-assistant": Profile(sessions_per_hour=5.0)}), START, 1)
    return write_store(events, tmp_path_factory.mktemp("lake"))


def start_endless_query(db: Path, cwd: Path) -> subprocess.Popen[str]:
    """``agentwatch sql`` running ENDLESS, returned once its query has begun."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.cli", "sql", "--db", str(db), ENDLESS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not catches_sigterm(proc.pid):  # the query's own handlers are in place
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.02)
    time.sleep(0.3)  # into the query itself
    return proc


def catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    """Send ``signum``; the seconds until ``proc`` exits, and its stderr."""
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{signal.Signals(signum).name} did not stop the query")
    return time.monotonic() - sent, err


def test_ctrl_c_stops_a_running_query_with_one_line_and_exit_130(db: Path, tmp_path: Path) -> None:
    proc = start_endless_query(db, tmp_path)
    took, err = stop(proc, signal.SIGINT)
    assert took < STOPPED_WITHIN_S
    assert proc.returncode == 130
    assert err == "agentwatch sql: stopped by SIGINT\n"


def test_sigterm_stops_a_running_query_with_one_line_and_exit_143(db: Path, tmp_path: Path) -> None:
    proc = start_endless_query(db, tmp_path)
    took, err = stop(proc, signal.SIGTERM)
    assert took < STOPPED_WITHIN_S
    assert proc.returncode == 143
    assert err == "agentwatch sql: stopped by SIGTERM\n"


def test_a_query_leaves_the_signal_handlers_as_it_found_them(db: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert query(db, "SELECT count(*) > 0 FROM events")[1] == [(True,)]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_query_from_another_thread_runs_there(db: Path) -> None:
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(query(db, "SELECT 42 AS a")))
    worker.start()
    worker.join(60)
    assert found == [(["a"], [(42,)])]


def test_the_sql_help_names_the_exit_codes_of_a_stopped_query() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "sql", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert "Ctrl-C or SIGTERM stops a running query: exit code 130 or 143" in " ".join(
        done.stdout.split()
    )
