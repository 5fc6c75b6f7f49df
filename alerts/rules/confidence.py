"""How sure a rule on a share must be: the Wilson score bound of a proportion.

A share measured over a few dozen sessions is noisy: an agent whose containment is 73%
against a floor of 70% shows a 15-minute window below the floor about a third of the
time. A rule with ``confidence: 0.9`` judges the bound of the share's one-sided 90%
Wilson interval on the far side of the threshold instead of the share itself (the upper
bound for ``<`` and ``<=``, the lower for ``>`` and ``>=``), so it fires only when the
window's evidence says the share is beyond the threshold, not that it may be. The
exported PromQL computes the same bound (:func:`bound_promql`).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

# The comparisons a bound can serve, and which side of the interval each judges.
UPPER_FOR: Final = {"<": True, "<=": True, ">": False, ">=": False}


def z_score(confidence: float) -> float:
    """The standard normal quantile of a one-sided ``confidence`` (0.9 -> 1.2816)."""
    return NormalDist().inv_cdf(confidence)


def wilson_bound(share: float, samples: int, confidence: float, *, upper: bool) -> float:
    """The upper (or lower) one-sided Wilson score bound of ``share`` over ``samples``."""
    z = z_score(confidence)
    n = float(samples)
    p = min(1.0, max(0.0, share))
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread if upper else centre - spread) / (1 + z * z / n)


def bound_promql(share: str, samples: str, confidence: float, *, upper: bool) -> str:
    """:func:`wilson_bound` as a PromQL expression of two instant vectors."""
    z2 = z_score(confidence) ** 2
    z = math.sqrt(z2)
    p, n = f"({share})", f"({samples})"
    sign = "+" if upper else "-"
    return (
        f"({p} + {z2!r} / (2 * {n}) {sign} {z!r} * sqrt({p} * (1 - {p}) / {n} "
        f"+ {z2!r} / (4 * {n} * {n}))) / (1 + {z2!r} / {n})"
    )
