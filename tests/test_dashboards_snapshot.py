"""``agentwatch dashboards snapshot``: the fleet overview as PNG images and one HTML page.

The catalog is a simulated fleet landed by the processor's own pure core (decode, dedup,
pricing, session tracking) into real segments, so the DuckDB path reads what a
deployment would have. The Prometheus path is exercised against a real Prometheus in
``test_dashboards_prometheus.py``.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentwatch.dashboards.render import format_value, write_report
from agentwatch.dashboards.snapshot import (
    STAT_KEYS,
    TREND_KEYS,
    Snapshot,
    Window,
    from_duckdb,
)
from agentwatch.durations import parse_duration
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.test_dashboards import landed_fleet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
END = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
HOURS = 3


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hours of a six-agent fleet, landed as one segment behind a catalog."""
    data = tmp_path_factory.mktemp("snapshot-data")
    landed = landed_fleet(6, 4, END - dt.timedelta(hours=HOURS), END, 2.0)
    store = LakeStore(data / METADATA_FILE)
    store.prepare()
    last = landed.events["_offset"].max()
    assert isinstance(last, int)
    store.insert_tables({"events": landed.events, **landed.extra_tables})
    return data / METADATA_FILE


def run_snapshot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "dashboards", "snapshot", *args],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_the_snapshot_command_writes_the_key_panels_as_png_and_one_html_page(
    catalog: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    done = run_snapshot("--out", str(out), "--db", str(catalog), "--range", "2h")
    assert done.returncode == 0, done.stderr
    pictures = {"headline", "agents", *TREND_KEYS}
    assert {p.stem for p in out.glob("*.png")} == pictures
    for name in pictures:
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, name
    page = (out / "index.html").read_text()
    # Self-contained, so it can be mailed on its own: the headline and trend pictures are
    # embedded, and the per-agent table is an HTML table (searchable, copyable).
    assert page.count('<img src="data:image/png;base64,') == 1 + len(TREND_KEYS)
    assert page.count("<table>") == 1


def test_the_page_explains_each_chart_and_lists_every_agent(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert run_snapshot("--out", str(out), "--db", str(catalog)).returncode == 0
    page = html.unescape((out / "index.html").read_text())
    _, trends, agents = Snapshot.panels()
    for panel in trends:
        assert f'alt="{panel.title}: {panel.description}"' in page
    for agent in make_agents(6, seed=4):
        assert f'<td style="color:#1a202c">{agent.agent_id}</td>' in page
    assert all(f"<th>{q.column}</th>" in page for q in agents.queries)


def test_numbers_come_from_the_catalog_over_the_window_ending_at_the_newest_event(
    catalog: Path,
) -> None:
    snap = from_duckdb(catalog, parse_duration("2h"), budget_usd=50.0)
    assert snap.window.end == END
    assert snap.window.end - snap.window.start == dt.timedelta(hours=2)
    assert set(snap.stats) == set(STAT_KEYS)
    assert all(value is not None for value in snap.stats.values()), snap.stats
    assert snap.stats["sessions"] and snap.stats["sessions"] > 100
    assert 0 < (snap.stats["containment"] or 0) < 1
    assert snap.stats["budget_used"] == pytest.approx((snap.stats["spend_today"] or 0) / 50.0)
    assert set(snap.trends) == set(TREND_KEYS)
    assert {line.label for line in snap.trends["sessions_by_outcome"]} <= {
        "resolved", "escalated", "abandoned", "failed",
    }  # fmt: skip
    assert {line.label for line in snap.trends["llm_latency"]} == {"p50", "p95"}
    assert {row["agent_id"] for row in snap.table} == {a.agent_id for a in make_agents(6, 4)}
    for line in snap.trends["spend_by_agent"]:
        assert all(snap.window.start <= t < snap.window.end for t in line.times)


def test_a_missing_catalog_is_an_error_not_an_empty_report(tmp_path: Path) -> None:
    done = run_snapshot("--out", str(tmp_path / "r"), "--db", str(tmp_path / "none.sqlite"))
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("span", ["0", "0s"])
def test_a_range_that_is_not_above_0_is_a_usage_error_and_writes_nothing(
    catalog: Path, tmp_path: Path, span: str
) -> None:
    out = tmp_path / "r"
    done = run_snapshot("--out", str(out), "--db", str(catalog), "--range", span)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"agentwatch dashboards snapshot: error: argument --range: must be above 0, got {span}"
    )
    assert not out.exists()


def test_an_unreachable_prometheus_is_an_error(tmp_path: Path) -> None:
    done = run_snapshot("--out", str(tmp_path / "r"), "--prometheus", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert "cannot reach Prometheus" in done.stderr


@pytest.mark.parametrize(
    ("value", "unit", "decimals", "text"),
    [
        (0.718, "percentunit", None, "71.8%"),
        (0.0072, "percentunit", 2, "0.72%"),
        (159.0206, "currencyUSD", None, "$159.02"),
        (12345.6, "currencyUSD", None, "$12,346"),
        (0.0042, "currencyUSD", None, "$0.0042"),
        (7.84, "s", None, "7.84 s"),
        (0.42, "s", None, "420 ms"),
        (19258, "short", 0, "19,258"),
        (1_250_000, "short", None, "1.2M"),
        (3.5, "cpm", None, "3.50/min"),
        (None, "short", None, "n/a"),
        (float("nan"), "s", None, "n/a"),
    ],
)
def test_values_read_in_their_units(
    value: float | None, unit: str, decimals: int | None, text: str
) -> None:
    assert format_value(value, unit, decimals) == text


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("6h", 21600), ("2d", 172800)])
def test_ranges_are_written_as_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("six hours")


def test_pictures_are_labelled_with_the_window_in_utc(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert run_snapshot("--out", str(out), "--db", str(catalog), "--range", "2h").returncode == 0
    page = (out / "index.html").read_text()
    assert re.search(r"10:00 to 20 Nov 2026 12:00 UTC", page), page[:2000]


def test_a_fleet_with_no_traffic_yet_still_gets_a_report(tmp_path: Path) -> None:
    # A fresh deployment: Prometheus answers, but nothing has been landed yet.
    empty = Snapshot(Window(END - dt.timedelta(hours=1), END), "Prometheus at test", 1000.0)
    written = write_report(empty, tmp_path)
    assert {p.name for p in written} >= {"headline.png", "agents.png", "index.html"}
    assert "no agents in this window" in (tmp_path / "index.html").read_text()


def test_the_snapshot_command_logs_its_progress_when_stderr_is_not_a_terminal(
    catalog: Path, tmp_path: Path
) -> None:
    done = run_snapshot("--out", str(tmp_path / "r"), "--db", str(catalog), "--range", "2h")
    assert done.returncode == 0, done.stderr
    lines = re.findall(r"dashboards snapshot: (\d+) of (\d+)", done.stderr)
    assert len(lines) == 10 and lines[-1][0] == lines[-1][1]
