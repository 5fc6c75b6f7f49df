"""``agentwatch drift run`` and ``drift backfill`` stop at once on SIGTERM or Ctrl-C, a
running query too, with one line on stderr and exit code 128 + the signal's number, never
a traceback; a backfill from long before the data steps only through the data's windows."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.traffic import Fleet, Profile, generate, write_store
from tests.test_sql_interrupt import stop  # send a signal, time the exit

HOURS = 48
STOPPED_WITHIN_S = 5.0
# Every duration at its longest: an evaluation reads some hundred days of buckets, which
# takes seconds even on a small lake, so a signal finds it under way.
LONGEST = (
    "window: 7d\nmax_window: 7d\nreference: 90d\nrelease: {window: 30d, min_history: 30d}\n"
    "cumulative: {horizon: 7d}\n"
)
UNDER_WAY = "drift summaries loaded"  # a debug line of each day of buckets read


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of one agent's events, up to the current hour."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = now - dt.timedelta(hours=HOURS - 1)
    events = generate(Fleet({"hr-assistant": Profile(sessions_per_hour=5.0)}), start, HOURS)
    return write_store(events, tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def longest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drift") / "longest.yaml"
    path.write_text(LONGEST)
    return path


def start(cwd: Path, *args: str, log_level: str = "info") -> subprocess.Popen[str]:
    """``agentwatch drift ARGS``, text logs at ``log_level`` on its stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentwatch.cli", "--log-format", "text", "--log-level",
         log_level, "drift", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
    )  # fmt: skip


def wait_for_line(proc: subprocess.Popen[str], text: str) -> list[str]:
    """The stderr lines of ``proc`` up to the first that holds ``text``."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return seen
    proc.wait()
    pytest.fail(f"no line with {text!r}; stderr:\n{''.join(seen)}")


def test_sigterm_stops_an_evaluation_under_way_with_one_line_and_exit_143(
    db: Path, longest: Path, tmp_path: Path
) -> None:
    proc = start(tmp_path, "run", "--once", "--db", str(db), "--drift-config", str(longest),
                 log_level="debug")  # fmt: skip
    wait_for_line(proc, UNDER_WAY)
    took, err = stop(proc, signal.SIGTERM)
    assert took < STOPPED_WITHIN_S
    assert proc.returncode == 143
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "agentwatch drift run: stopped by SIGTERM"


def test_ctrl_c_stops_an_evaluation_under_way_with_one_line_and_exit_130(
    db: Path, longest: Path, tmp_path: Path
) -> None:
    proc = start(tmp_path, "run", "--once", "--db", str(db), "--drift-config", str(longest),
                 log_level="debug")  # fmt: skip
    wait_for_line(proc, UNDER_WAY)
    took, err = stop(proc, signal.SIGINT)
    assert took < STOPPED_WITHIN_S
    assert proc.returncode == 130
    assert "Traceback" not in err and "Query interrupted" not in err
    assert err.splitlines()[-1] == "agentwatch drift run: stopped by SIGINT"


def test_sigterm_ends_a_run_waiting_for_its_next_window_with_exit_0(
    db: Path, tmp_path: Path
) -> None:
    proc = start(tmp_path, "run", "--interval", "1h", "--db", str(db))
    wait_for_line(proc, "drift window evaluated")
    took, err = stop(proc, signal.SIGTERM)
    assert took < STOPPED_WITHIN_S
    assert proc.returncode == 0
    assert err == "agentwatch drift run: stopped by SIGTERM\n"


def test_ctrl_c_stops_a_backfill_with_one_line_and_exit_130(
    db: Path, longest: Path, tmp_path: Path
) -> None:
    proc = start(tmp_path, "backfill", "--from", "2d", "--dry-run", "--db", str(db),
                 "--drift-config", str(longest), log_level="debug")  # fmt: skip
    wait_for_line(proc, UNDER_WAY)
    took, err = stop(proc, signal.SIGINT)
    assert took < STOPPED_WITHIN_S
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "agentwatch drift backfill: stopped by SIGINT"


def test_a_backfill_from_a_century_before_the_data_steps_only_through_its_windows(
    db: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "drift", "backfill",
         "--from", "100y", "--dry-run", "--db", str(db)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (total,) = {
        line["total"]
        for line in map(json.loads, done.stderr.splitlines())
        if line["msg"].startswith("drift backfill: ")
    }
    assert total <= HOURS  # the window ends from the first event's hour on, not 876,000
