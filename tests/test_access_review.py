"""Access reviews: least privilege per agent, human approvals of writes, and their age."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.governance.registry import Registry
from agentwatch.alerts.governance.review import record_review, run_review
from agentwatch.alerts.governance.review_report import render_html
from agentwatch.alerts.rules import Window, metrics
from agentwatch.cli import main
from agentwatch.frames import register
from agentwatch.processors.store.attach import connect as connect_lake
from tests.frames import T0, at, events
from tests.lifecycle_helpers import db_of, make_registry

APPROVED = json.dumps({"approved_by": "dana"})


def tool(name: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": "claims-1",
        "kind": "tool_call",
        "tool_name": name,
        "ts": at(seconds),
    } | extra


def fleet() -> list[dict[str, Any]]:
    return [
        {"agent_id": "claims-1", "kind": "llm_call", "model": "claude-3-5-sonnet", "ts": at(1)},
        {"agent_id": "claims-1", "kind": "llm_call", "model": "o3", "ts": at(2)},
        tool("claims.create", 3, attributes=APPROVED),
        tool("claims.create", 4),
        tool("claims.delete", 5, attributes=APPROVED),
        tool("crm.export_all", 6),
        {
            "agent_id": "claims-1",
            "kind": "escalation",
            "target": "claims-adjusters",
            "reason": "injury",
            "ts": at(7),
        },
        {
            "agent_id": "claims-1",
            "kind": "escalation",
            "target": "claims-adjusters",
            "reason": "injury",
            "ts": at(8),
        },
    ]


def reviewed(tmp_path: Path) -> tuple[Registry, Any]:
    registry = make_registry(tmp_path, events(*fleet()))
    review = run_review(registry, db_of(registry), T0, at(3600), ["claims-1"])
    return registry, review.agents[0]


def test_approved_models_and_tools_never_used_are_candidates_to_revoke(tmp_path: Path) -> None:
    _, claims = reviewed(tmp_path)
    assert claims.unused_models == ["gpt-4o-mini"]
    assert claims.unused_tools == ["policy.search"]


def test_models_and_tools_used_without_approval_are_named(tmp_path: Path) -> None:
    _, claims = reviewed(tmp_path)
    assert claims.unapproved_models == ["o3"]
    assert claims.unapproved_tools == ["crm.export_all"]


def test_write_and_destructive_calls_count_their_human_approvals(tmp_path: Path) -> None:
    _, claims = reviewed(tmp_path)
    # crm.export_all is not classified: it counts as a write (the default tier)
    assert (claims.tiers["write"].calls, claims.tiers["write"].human_approved) == (3, 1)
    assert (claims.tiers["destructive"].calls, claims.tiers["destructive"].human_approved) == (1, 1)
    assert claims.tiers["read"].calls == 0


def test_escalation_paths_are_counted_by_target_and_reason(tmp_path: Path) -> None:
    _, claims = reviewed(tmp_path)
    assert [(e.target, e.reason, e.count) for e in claims.escalations] == [
        ("claims-adjusters", "injury", 2)
    ]


def test_the_html_page_carries_both_plots_and_each_agent(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, events(*fleet()))
    page = render_html(run_review(registry, db_of(registry), T0, at(3600)))
    assert page.count("data:image/png;base64,") == 2
    assert "claims-1" in page and "faq-1" in page and "crm.export_all" in page


def review_age(registry: Registry, end: dt.datetime) -> dict[str, float | None]:
    con = connect_lake(db_of(registry))
    try:
        register(con, "agent_catalog", registry.catalog.frame())
        found = metrics()["review_age_days"].measure(
            con, Window(end - dt.timedelta(minutes=5), end)
        )
    finally:
        con.close()
    return {s.labels["agent_id"]: s.value for s in found}


def test_review_age_counts_from_the_first_record_until_a_review_is_recorded(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, events(*fleet()))
    first = registry.history["ts"].min()
    assert isinstance(first, dt.datetime)
    ages = review_age(registry, first + dt.timedelta(days=40))
    assert ages["claims-1"] == pytest.approx(40.0)
    review = run_review(registry, db_of(registry), T0, at(3600), ["claims-1"])
    record_review(registry, review, "person:dana", first + dt.timedelta(days=35))
    ages = review_age(registry, first + dt.timedelta(days=40))
    assert ages["claims-1"] == pytest.approx(5.0)
    assert ages["faq-1"] == pytest.approx(40.0)


def test_agents_review_prints_a_table_within_100_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path, events(*fleet()))
    db = str(tmp_path / "data" / "agentwatch.sqlite")
    catalog = str(tmp_path / "catalog.yaml")
    # the fleet's events are from T0; a window reaching back to it covers them
    since = f"{(dt.datetime.now(dt.UTC) - T0).days + 1}d"
    assert main(["agents", "review", "--since", since, "--db", db, "--catalog", catalog]) == 0
    out = capsys.readouterr().out
    assert "claims-1" in out and "1/3" in out  # one of three writes approved
    assert max(len(line) for line in out.splitlines()) <= 100


def test_agents_review_writes_html_and_records_with_json_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path, events(*fleet()))
    db = str(tmp_path / "data" / "agentwatch.sqlite")
    catalog = str(tmp_path / "catalog.yaml")
    page = tmp_path / "review.html"
    args = ["--db", db, "--catalog", catalog]
    assert main(["agents", "review", "--format", "html", "--out", str(page), *args]) == 0
    assert page.read_text().startswith("<!doctype html>")
    assert main(["agents", "review", "faq-1", "--record", "--format", "json", *args]) == 0
    capsys.readouterr()
    rows = connect_lake(db).sql("SELECT agent_id FROM access_reviews").fetchall()
    assert rows == [("faq-1",)]


def test_agents_review_of_an_unknown_agent_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    db = str(tmp_path / "data" / "agentwatch.sqlite")
    catalog = str(tmp_path / "catalog.yaml")
    assert main(["agents", "review", "ghost", "--db", db, "--catalog", catalog]) == 2
    assert "unknown agent 'ghost'" in capsys.readouterr().err
