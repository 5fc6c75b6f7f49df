"""A scenario file that cannot be used is refused in one line naming the file, the key
path (``changes[0].tokens.scale``) and the problem; ``agentwatch simulate`` exits 2 on
that line before it connects to Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentwatch.cli import main
from agentwatch.ingest.sim.scenario import ScenarioError
from agentwatch.ingest.sim.scenario_file import load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
CHANGE: dict[str, Any] = {"at": "+1h", "agent": "it-support-1", "tokens": {"scale": 1.5}}


def change(**overrides: Any) -> dict[str, Any]:
    return {"changes": [{**CHANGE, **overrides}]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"chnges": []}, "chnges: unknown key (did you mean changes?)"),
        (change(agnet="hr-1"), "changes[0].agnet: unknown key (did you mean agent?)"),
        ({"run": {"sead": 3}}, "run.sead: unknown key (did you mean seed?)"),
        (change(tokens={"scal": 2}), "changes[0].tokens.scal: unknown key (did you mean scale?)"),
        ({"run": {"seed": "lucky"}}, "run.seed: Expected `int | null`, got `str`"),
        (
            change(duration="1 hour"),
            "changes[0].duration: not a duration: '1 hour' "
            "(use e.g. 500ms, 30s, 5m, 1h30m, 2d or 1w)",
        ),
        ({"run": {"duration": "0s"}}, "run.duration: must be positive, got '0s'"),
        (change(tokens={}), "changes[0].tokens.scale: required key is missing"),
        ({"expect": [{"signal": "input_tokens"}]}, "expect[0].agent: required key is missing"),
        (
            change(tokens={"scale": float("inf")}),
            "changes[0].tokens.scale: Expected `float` <= 1000.0",
        ),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-change-key",
        "unknown-run-key",
        "unknown-kind-key",
        "wrong-type",
        "bad-duration",
        "zero-duration",
        "missing-kind-key",
        "missing-expect-key",
        "infinite-scale",
    ],
)
def test_a_bad_scenario_is_refused_in_one_line(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(doc, "scenarios/x.yaml")
    assert str(caught.value) == f"scenarios/x.yaml: {message}"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_decodes(path: Path) -> None:
    assert load_scenario(path).name == path.stem


def test_an_empty_key_is_the_default() -> None:
    scenario = parse_scenario({"run": None, "changes": None, "expect": None}, "x.yaml", "x")
    assert (scenario.changes, scenario.expect, scenario.run.agents) == ((), (), None)


def test_the_cli_reports_a_bad_scenario_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "changes:\n  - {at: +1h, agent: it-support-1, agnet: hr-1, tokens: {scale: 2}}\n"
    )
    # No broker listens on port 9: the command must stop before it tries one.
    assert main(["simulate", "--scenario", str(path), "--bootstrap", "127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == (
        f"agentwatch: {path}: changes[0].agnet: unknown key (did you mean agent?)\n"
    )
