"""Releases: what they are made of, approvals, stages, and the traffic checked against them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agentwatch import frames
from agentwatch.alerts.governance.registry import Registry
from agentwatch.alerts.governance.releases import ReleaseError, Releases, read_evaluation
from agentwatch.alerts.rules import Window, metrics
from agentwatch.cli import main
from agentwatch.processors.store.attach import connect as connect_lake
from tests.frames import T0, at, events
from tests.lifecycle_helpers import db_of, eval_file, make_registry


def register(registry: Registry, tmp_path: Path, version: str = "1.4.0", **kw: Any) -> None:
    Releases(registry).register(
        kw.pop("agent", "claims-1"),
        version,
        actor="person:ana",
        prompt_versions=kw.pop("prompt_versions", ["v5"]),
        models=kw.pop("models", ["claude-3-5-sonnet"]),
        tools=kw.pop("tools", ["claims.create", "policy.search"]),
        evaluation=read_evaluation(eval_file(tmp_path), None),
    )


def measure(registry: Registry, name: str) -> dict[tuple[str, ...], float | None]:
    con = connect_lake(db_of(registry))
    try:
        frames.register(con, "agent_catalog", registry.catalog.frame())
        found = metrics()[name].measure(con, Window(T0, at(600)))
    finally:
        con.close()
    return {tuple(s.labels.values()): s.value for s in found}


def traffic(version: str, agent: str = "claims-1", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "agent_id": agent,
            "agent_version": version,
            "kind": "llm_call",
            "model": "claude-3-5-sonnet",
            "ts": at(10),
            "input_tokens": 1,
            "output_tokens": 1,
        }
        | extra,
        {
            "agent_id": agent,
            "agent_version": version,
            "kind": "tool_call",
            "tool_name": "claims.create",
            "ts": at(11),
        },
    ]


def test_a_release_records_its_models_tools_with_tiers_and_evaluation_digest(
    tmp_path: Path,
) -> None:
    registry = make_registry(tmp_path)
    register(registry, tmp_path)
    release = Releases(registry).get("claims-1", "1.4.0")
    assert release.models == ("claude-3-5-sonnet",)
    assert release.tool_tiers == {"claims.create": "write", "policy.search": "read"}
    assert release.eval_score == 0.91
    assert release.eval_sha256 == hashlib.sha256(eval_file(tmp_path).read_bytes()).hexdigest()
    assert release.needs_approval and not release.may_run_in_prod


def test_a_release_with_a_model_the_agent_may_not_use_is_refused(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    with pytest.raises(ReleaseError, match="model\\(s\\) o3 not approved for agent claims-1"):
        register(registry, tmp_path, models=["o3"])


def test_a_release_registered_twice_is_refused(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    register(registry, tmp_path)
    with pytest.raises(ReleaseError, match="already registered"):
        register(registry, tmp_path)


def test_approving_a_release_that_does_not_exist_names_the_registered_ones(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    register(registry, tmp_path)
    with pytest.raises(
        ReleaseError, match=r"no release '9.9' of agent claims-1 .*registered: 1.4.0"
    ):
        Releases(registry).approve("claims-1", "9.9", actor="person:bo")


def test_a_high_risk_release_rolls_out_only_after_an_approval(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    register(registry, tmp_path)
    releases = Releases(registry)
    with pytest.raises(ReleaseError, match="needs an approval before it may roll out"):
        releases.stage("claims-1", "1.4.0", "canary", actor="person:ana", share=0.1)
    releases.approve("claims-1", "1.4.0", actor="person:bo")
    staged = releases.stage("claims-1", "1.4.0", "canary", actor="person:ana", share=0.1)
    assert (staged.stage, staged.canary_share) == ("canary", 0.1)
    assert [a.by for a in staged.approvals] == ["person:bo"]


def test_an_evaluation_file_without_a_score_needs_one_given(tmp_path: Path) -> None:
    path = tmp_path / "eval.txt"
    path.write_text("all green")
    with pytest.raises(ReleaseError, match="no numeric top-level `score`"):
        read_evaluation(path, None)
    assert read_evaluation(path, 0.8).score == 0.8


# --------------------------------------------------------------------------- traffic


def test_prod_traffic_of_an_unregistered_release_is_counted(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, events(*traffic("1.4.0"), *traffic("1.5.0-hotfix")))
    register(registry, tmp_path)
    assert measure(registry, "unregistered_release_events") == {("claims-1", "1.5.0-hotfix"): 2.0}


def test_an_agent_without_registered_releases_is_not_checked(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, events(*traffic("0.1", agent="faq-1")))
    assert measure(registry, "unregistered_release_events") == {}


def test_an_unapproved_high_risk_release_in_prod_is_counted_until_approved(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, events(*traffic("1.4.0")))
    register(registry, tmp_path)
    assert measure(registry, "unapproved_release_events") == {("claims-1", "1.4.0"): 2.0}
    Releases(registry).approve("claims-1", "1.4.0", actor="person:bo")
    assert measure(registry, "unapproved_release_events") == {}


def test_staging_traffic_of_an_unapproved_release_is_not_counted(tmp_path: Path) -> None:
    rows = [r | {"environment": "staging"} for r in traffic("1.4.0")]
    registry = make_registry(tmp_path, events(*rows))
    register(registry, tmp_path)
    assert measure(registry, "unapproved_release_events") == {}


def test_a_call_outside_the_release_is_counted_by_model_and_tool(tmp_path: Path) -> None:
    rows = [
        *traffic("1.4.0", model="gpt-4o-mini"),
        {
            "agent_id": "claims-1",
            "agent_version": "1.4.0",
            "kind": "tool_call",
            "tool_name": "claims.delete",
            "ts": at(12),
        },
    ]
    registry = make_registry(tmp_path, events(*rows))
    register(registry, tmp_path)
    assert measure(registry, "off_release_calls") == {
        ("claims-1", "1.4.0", "model", "gpt-4o-mini"): 1.0,
        ("claims-1", "1.4.0", "tool", "claims.delete"): 1.0,
    }


def test_the_shipped_rules_name_the_release_signals() -> None:
    from agentwatch.alerts.rules import load_rules

    by_metric = {r.metric: r.name for r in load_rules()}
    assert by_metric["unregistered_release_events"] == "UnregisteredReleaseInProd"
    assert by_metric["unapproved_release_events"] == "UnapprovedReleaseInProd"
    assert by_metric["off_release_calls"] == "OffReleaseCall"
    assert by_metric["review_age_days"] == "AccessReviewOverdue"


# --------------------------------------------------------------------------- commands


def cli(tmp_path: Path, *args: str) -> int:
    db = tmp_path / "data" / "agentwatch.sqlite"
    return main(
        [*args, "--db", str(db), "--catalog", str(tmp_path / "catalog.yaml"), "--by", "ana"]
    )


def test_releases_register_approve_and_list_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    evaluation = str(eval_file(tmp_path))
    assert (
        cli(
            tmp_path,
            "releases",
            "register",
            "claims-1",
            "1.4.0",
            "--model",
            "claude-3-5-sonnet",
            "--tool",
            "claims.create",
            "--eval",
            evaluation,
        )
        == 0
    )
    assert cli(tmp_path, "releases", "approve", "claims-1", "1.4.0") == 0
    capsys.readouterr()
    assert cli(tmp_path, "releases", "list", "--format", "json") == 0
    (release,) = json.loads(capsys.readouterr().out)
    assert release["approvals"][0]["by"] == "person:ana"
    assert release["tools"] == {"claims.create": "write"}
    assert release["may_run_in_prod"] is True


def test_releases_approve_of_a_release_that_does_not_exist_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    assert cli(tmp_path, "releases", "approve", "claims-1", "9.9") == 2
    assert "no release '9.9' of agent claims-1" in capsys.readouterr().err


def test_releases_register_for_an_unknown_agent_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    evaluation = str(eval_file(tmp_path))
    assert (
        cli(tmp_path, "releases", "register", "ghost", "1", "--model", "m", "--eval", evaluation)
        == 2
    )
    assert "unknown agent 'ghost'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"), [("--model", ""), ("--tool", " "), ("--prompt-version", "")]
)
def test_releases_register_with_an_empty_name_is_a_usage_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    make_registry(tmp_path)
    args = ["releases", "register", "claims-1", "1.4.0", "--model", "claude-3-5-sonnet",
            flag, value, "--eval", str(eval_file(tmp_path))]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        cli(tmp_path, *args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"agentwatch releases register: error: argument {flag}: must not be empty or blank"
    )


def test_releases_register_with_a_missing_evaluation_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_registry(tmp_path)
    missing = str(tmp_path / "nope.json")
    assert (
        cli(
            tmp_path,
            "releases",
            "register",
            "claims-1",
            "1",
            "--model",
            "gpt-4o-mini",
            "--eval",
            missing,
        )
        == 2
    )
    assert "cannot read evaluation file" in capsys.readouterr().err
