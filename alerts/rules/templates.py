"""Annotation templates: the subset of Prometheus' Go templates that rules use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from agentwatch.durations import human_duration


class TemplateError(ValueError):
    """An annotation template that uses something the renderer does not know."""


# The subset of Prometheus' Go templates that annotations use, so a rule reads the same
# here and in an exported Prometheus rule file: {{ $labels.NAME }}, {{ $value }},
# optionally piped to humanize, humanizePercentage or humanizeDuration; plus
# {{ $threshold }} and {{ $samples }}, which only this evaluator knows.
_PLACEHOLDER: Final = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_EXPR: Final = re.compile(
    r"^\$(labels\.(?P<label>[A-Za-z_][A-Za-z0-9_]*)|(?P<var>value|threshold|samples))"
    r"(\s*\|\s*(?P<fn>humanize|humanizePercentage|humanizeDuration))?$"
)


def render(
    template: str,
    labels: Mapping[str, str],
    value: float | None,
    threshold: float | None,
    samples: int | None,
) -> str:
    """Fill an annotation template for one alert."""

    def fill(match: re.Match[str]) -> str:
        expr = _EXPR.match(match.group(1))
        if expr is None:
            raise TemplateError(
                f"cannot render {match.group(0)}: use $labels.NAME, $value, $threshold or "
                "$samples, optionally | humanize, humanizePercentage or humanizeDuration"
            )
        if expr.group("label"):
            return labels.get(expr.group("label"), "")
        var = expr.group("var")
        number = {"value": value, "threshold": threshold}.get(var, samples)
        if number is None:
            return "n/a"
        return _humanize(float(number), expr.group("fn"))

    text = _PLACEHOLDER.sub(fill, template)
    if "{{" in text or "}}" in text:
        raise TemplateError(f"unbalanced braces in {template!r}")
    return text


def _humanize(number: float, fn: str | None) -> str:
    if fn == "humanizePercentage":
        return f"{number * 100:.4g}%"
    if fn == "humanizeDuration":
        return human_duration(number)
    if fn == "humanize":
        for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(number) >= size:
                return f"{number / size:.4g}{suffix}"
        return f"{number:.4g}"
    return f"{number:g}"
