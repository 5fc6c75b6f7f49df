"""Multiple testing: the false discovery rate over a window's p-valued drift tests.

A window runs many tests per agent, so a fixed per-test level would raise false alarms
in proportion to their number: p-values are adjusted by Benjamini-Hochberg per family
(:func:`fdr_by_family`), over all (:func:`fdr_adjust`) or in two levels
(:func:`fdr_hierarchical`), and a result's distance past its threshold is put on one
scale (:func:`severity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from agentwatch.processors.drift.stats import FloatArray


def fdr_adjust(p_values: Sequence[float] | FloatArray) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (q-values): drift where q <= the FDR level."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=np.float64)


def severity(score: float | None, threshold: float, p_valued: bool) -> float | None:
    """How far past its threshold a result is, 1.0 at the threshold, on every test's scale.

    Distances: score / threshold. P-valued tests (score is the q-value):
    log(q) / log(alpha), so q = alpha gives 1 and smaller q gives more.
    """
    if score is None or math.isnan(score):
        return None
    if not p_valued:
        return score / threshold if threshold > 0 else math.inf
    q = min(max(score, 1e-300), 1.0)
    return max(0.0, math.log(q) / math.log(threshold)) if 0.0 < threshold < 1.0 else 0.0


def simes(p_values: Sequence[float] | FloatArray) -> float:
    """Simes' combined p-value of a family: valid for the family's global null under
    independence or positive dependence, and as sensitive as BH to one strong result."""
    p = np.sort(np.asarray(p_values, dtype=np.float64))
    if p.size == 0:
        return 1.0
    return float(min(1.0, np.min(p * p.size / np.arange(1, p.size + 1))))


def fdr_by_family(p_values: Sequence[float], families: Sequence[object]) -> FloatArray:
    """BH q-values computed separately within each family (e.g. each agent's tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.ones_like(p)
    index: dict[object, list[int]] = {}
    for i, family in enumerate(families):
        index.setdefault(family, []).append(i)
    for members in index.values():
        q[members] = fdr_adjust(p[members])
    return q


def fdr_hierarchical(
    p_values: Sequence[float], families: Sequence[object], level: float
) -> FloatArray:
    """Two-level FDR (Benjamini and Bogomolov, 2014): families, then tests within them.

    Families are selected by BH at ``level`` over their Simes p-values; within each of
    the R selected of F families, BH q-values are scaled by F / R, which controls the
    average FDR over the selected families. Tests of unselected families get q = 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    index: dict[object, list[int]] = {}
    for i, family in enumerate(families):
        index.setdefault(family, []).append(i)
    names = list(index)
    family_q = fdr_adjust([simes(p[index[f]]) for f in names])
    selected = [f for f, fq in zip(names, family_q, strict=True) if fq <= level]
    q = np.ones_like(p)
    if not selected:
        return q
    scale = len(names) / len(selected)
    for f in selected:
        q[index[f]] = np.minimum(1.0, fdr_adjust(p[index[f]]) * scale)
    return q
