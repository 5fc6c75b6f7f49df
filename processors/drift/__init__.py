"""Drift and regression detection: how an agent behaves now against how it behaved.

Compact bucket summaries (``summaries``) of the signals (``signals``) are compared with
the registered statistical tests (``stats``) per window (``evaluate``); results go to the
``drift_scores`` table and to Prometheus (``metrics``), and ``report`` renders them.
"""

from agentwatch.processors.drift.config import DriftConfig, config_from_mapping, load_config
from agentwatch.processors.drift.evaluate import (
    DriftEvaluator,
    backfill,
    evaluate,
    window_ends,
)
from agentwatch.processors.drift.signals import SIGNALS
from agentwatch.processors.drift.stats import TESTS, Counts

__all__ = [
    "SIGNALS",
    "TESTS",
    "Counts",
    "DriftConfig",
    "DriftEvaluator",
    "backfill",
    "config_from_mapping",
    "evaluate",
    "load_config",
    "window_ends",
]
