"""The agent registry: every load of the catalog file is diffed and recorded; the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, CatalogError, load_catalog
from agentwatch.alerts.governance.registry import load_registry
from agentwatch.cli import main
from tests.lifecycle_helpers import CATALOG_YAML, db_of, make_registry, write_catalog


def agents_cli(tmp_path: Path, *args: str) -> int:
    db = tmp_path / "data" / "agentwatch.sqlite"
    return main(["agents", *args, "--db", str(db), "--catalog", str(tmp_path / "catalog.yaml")])


def test_the_first_load_records_every_agent_as_added(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    history = registry.history.sort("agent_id")
    assert history["agent_id"].to_list() == ["claims-1", "faq-1"]
    assert set(history["change"]) == {"added"}
    assert set(history["actor"]) == {"person:ana"}


def test_an_unchanged_catalog_records_nothing_on_reload(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    again = load_registry(db_of(registry), tmp_path / "catalog.yaml", actor="person:bo")
    assert again.history.height == 2


def test_an_edited_entry_is_recorded_with_who_and_the_field_diff(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    write_catalog(tmp_path, CATALOG_YAML.replace("risk_tier: low", "risk_tier: medium"))
    again = load_registry(db_of(registry), tmp_path / "catalog.yaml", actor="person:bo")
    last = again.revisions("faq-1")[-1]
    assert (last.number, last.change, last.actor) == (2, "changed", "person:bo")
    assert [(d.field, d.before, d.after) for d in last.diff] == [("risk_tier", "low", "medium")]


def test_a_removed_agent_is_recorded_as_removed(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    write_catalog(tmp_path, CATALOG_YAML.split("  - agent_id: faq-1")[0])
    again = load_registry(db_of(registry), tmp_path / "catalog.yaml", actor="person:bo")
    last = again.revisions("faq-1")[-1]
    assert last.change == "removed" and last.entry is None


def test_the_new_entry_fields_are_decoded(tmp_path: Path) -> None:
    entry = make_registry(tmp_path).entry("claims-1")
    assert entry.autonomy == "act_with_approval"
    assert (entry.business_owner, entry.technical_owner) == ("head-of-claims", "claims-platform")
    assert entry.data_sources == ("policy-db", "claims-db")
    assert entry.tool_tier("claims.delete") == "destructive"
    assert entry.slo["cost_per_session_usd"] == 0.4
    assert entry.review_interval() == 30.0  # high risk


def test_a_misspelt_nested_key_is_named_with_its_path_and_the_closest_key(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path,
        CATALOG_YAML.replace(
            "oncall: web-pager", "oncall: web-pager\n    pinned: {agent_verison: '1.0'}"
        ),
    )
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert "agent faq-1: unknown key `pinned.agent_verison`; did you mean `agent_version`?" in str(
        err.value
    )
    assert str(path) in str(err.value)


def test_a_tool_tier_outside_read_write_destructive_is_refused(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, CATALOG_YAML.replace("{kb.search: read}", "{kb.search: admin}"))
    with pytest.raises(
        CatalogError,
        match=r"`tool_tiers\.kb\.search` must be one of read, write, destructive, got 'admin'",
    ):
        load_catalog(path)


def test_a_tier_for_a_tool_that_is_not_approved_is_refused(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, CATALOG_YAML.replace("{kb.search: read}", "{kb.delete: read}"))
    with pytest.raises(CatalogError, match="tool_tiers names tools that are not approved"):
        load_catalog(path)


def test_the_shipped_catalog_stays_valid() -> None:
    assert len(load_catalog(EXAMPLE_CATALOG)) >= 13


# --------------------------------------------------------------------------- commands


def test_agents_list_prints_every_agent_within_100_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    assert agents_cli(tmp_path, "list") == 0
    out = capsys.readouterr().out
    assert "claims-1" in out and "faq-1" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_agents_show_prints_the_entry_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    assert agents_cli(tmp_path, "show", "claims-1", "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entry"]["tool_tiers"]["claims.delete"] == "destructive"
    assert doc["releases"] == []


def test_agents_show_of_an_unknown_agent_exits_2_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    assert agents_cli(tmp_path, "show", "ghost-1") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown agent 'ghost-1'" in err and "claims-1, faq-1" in err


def test_agents_history_and_diff_show_a_recorded_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    write_catalog(tmp_path, CATALOG_YAML.replace("risk_tier: low", "risk_tier: medium"))
    assert agents_cli(tmp_path, "history", "faq-1", "--format", "json") == 0
    history = json.loads(capsys.readouterr().out)
    assert [h["change"] for h in history] == ["added", "changed"]
    assert agents_cli(tmp_path, "diff", "faq-1", "--format", "json") == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["diff"] == [{"field": "risk_tier", "before": "low", "after": "medium"}]


def test_agents_diff_of_a_revision_that_does_not_exist_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    assert agents_cli(tmp_path, "diff", "faq-1", "--from", "1", "--to", "7") == 2
    assert "has no revision 7" in capsys.readouterr().err


def test_a_broken_catalog_file_stops_the_command_with_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    write_catalog(tmp_path, CATALOG_YAML.replace("status: active", "status: gone", 1))
    assert agents_cli(tmp_path, "list") == 2
    assert "catalog.yaml: invalid catalog" in capsys.readouterr().err
