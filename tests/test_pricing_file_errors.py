"""A pricing table that cannot be used is refused in one line naming the file, the key
path (``prices[1].input``) and the problem; ``agentwatch cost`` exits 2 on that line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.cli import main
from agentwatch.processors.landing.pricing import PricingError, load_pricing

ROW = "{provider: acme, model: m, effective_from: 2025-01-01, input: 1, output: 2}"
OTHER = ROW.replace("model: m", "model: n")


def table(*rows: str, head: str = 'version: "v1"\nsource: test\n') -> str:
    return head + "prices:\n" + "".join(f"  - {r}\n" for r in rows)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            table(ROW, head='version: "v1"\nsorce: test\n'),
            "sorce: unknown key (did you mean source?)",
        ),
        (
            table(ROW, OTHER.replace("output: 2", "ouptut: 2")),
            "prices[1].ouptut: unknown key (did you mean output?)",
        ),
        (
            table(ROW, OTHER.replace("input: 1", "input: cheap")),
            "prices[1].input: Expected `float`, got `str`",
        ),
        (
            table(ROW.replace("2025-01-01", "2025-02-30")),
            "prices[0].effective_from: Invalid RFC3339 encoded date",
        ),
        (table(ROW.replace(", output: 2", "")), "prices[0].output: required key is missing"),
        (table(ROW, head="source: test\n"), "version: required key is missing"),
        (
            table(ROW.replace("input: 1", "input: -1")),
            "prices[0].input: must be a finite price >= 0, got -1",
        ),
        (table(ROW, ROW), "prices[0] and prices[1] both price acme/m from 2025-01-01; keep one"),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-column",
        "wrong-type",
        "bad-date",
        "missing-column",
        "missing-version",
        "negative-price",
        "duplicate-row",
    ],
)
def test_a_bad_table_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(text)
    with pytest.raises(PricingError) as caught:
        load_pricing(path)
    assert str(caught.value) == f"{path}: {message}"


def test_the_shipped_table_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTWATCH_PRICING_FILE", raising=False)
    assert load_pricing().rows


def test_the_cli_reports_a_bad_table_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(table(ROW.replace("input: 1", "input: cheap")))
    assert main(["cost", "show", "--pricing", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"agentwatch: {path}: prices[0].input: Expected `float`, got `str`\n"
    )
