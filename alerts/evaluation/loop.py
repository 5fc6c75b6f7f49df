"""Evaluating on a schedule: the loop, its sinks, and the rule files it follows.

Each evaluation goes to a *sink*, a function of the :class:`Evaluation` (transitions,
active alerts, verdicts), and each rule's transitions, as soon as that rule is decided,
to a *rule sink* (the runbooks, which contain agents). A caller of :func:`run_loop`
passes its own, so the evaluator never needs to know who listens. A sink that raises is
logged and the loop goes on: the transitions are already in ``alert_events``.

The catalog and the rules are re-read when their files change (:class:`Sources`), so a
governance edit (retiring an agent, approving a model) takes effect at the next
evaluation; a file that no longer validates is reported and the previous version stays
in force.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agentwatch.alerts.evaluation.evaluator import AlertSink, Evaluation, Evaluator, RuleSink
from agentwatch.alerts.governance.catalog import Catalog, load_catalog
from agentwatch.alerts.rules import Rule, load_rules
from agentwatch.settings import ConfigError

log = logging.getLogger(__name__)


def fan_out(sinks: Sequence[AlertSink]) -> AlertSink:
    """One sink that feeds several in order; one that fails does not starve the others."""

    def sink(evaluation: Evaluation) -> None:
        for each in sinks:
            try:
                each(evaluation)
            except Exception:
                log.exception("alert sink failed", extra={"sink": repr(each)})

    return sink


def log_sink(evaluation: Evaluation) -> None:
    """The default sink: one summary line per evaluation that changed something."""
    if evaluation.transitions or evaluation.errors:
        log.info(
            "alerts evaluated",
            extra={
                "at": evaluation.at.isoformat(),
                "transitions": len(evaluation.transitions),
                "firing": len(evaluation.firing),
                "pending": len(evaluation.pending),
                "held": len(evaluation.held),
                "rule_errors": dict(evaluation.errors),
            },
        )


class Sources:
    """The catalog file and the rules directory, re-read when they change on disk."""

    def __init__(self, catalog_path: Path | None, rules_dir: Path) -> None:
        self.catalog_path = catalog_path
        self.rules_dir = rules_dir
        self._stamp = self._stamps()
        self.catalog: Catalog = load_catalog(catalog_path)
        self.rules: list[Rule] = load_rules(rules_dir)

    def _stamps(self) -> tuple[tuple[str, float], ...]:
        paths = [self.catalog_path, *sorted(self.rules_dir.glob("*.yaml"))]
        return tuple((str(p), p.stat().st_mtime) for p in paths if p is not None and p.exists())

    def reload(self, evaluator: Evaluator, *, force: bool = False) -> None:
        """Give the evaluator the files' current versions if they changed and validate.

        ``force`` re-reads even when no modification time moved (a coarse file system
        clock can hide an edit made within the same tick).
        """
        stamp = self._stamps()
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        try:
            catalog = load_catalog(self.catalog_path)
            rules = load_rules(self.rules_dir)
            evaluator.update(rules=rules, catalog=catalog)
        except (ConfigError, ValueError) as exc:
            log.error(
                "catalog or rules not reloaded; the previous ones stay", extra={"error": str(exc)}
            )
            return
        self.catalog, self.rules = catalog, rules
        log.info("catalog and rules reloaded", extra={"agents": len(catalog), "rules": len(rules)})


def run_loop(
    evaluator: Evaluator,
    sink: AlertSink,
    *,
    interval: float,
    stop: threading.Event,
    on_rule: RuleSink | None = None,
    before_each: Callable[[], None] | None = None,
    max_evaluations: int | None = None,
) -> int:
    """Evaluate every ``interval`` seconds until ``stop`` is set; return how many ran.

    The urgent rules are also measured again every ``interval`` within an evaluation
    that takes longer, and when an urgent pending alert's ``for`` runs out the next
    evaluation starts then (see :func:`~agentwatch.alerts.evaluation.evaluator.schedule`).
    An evaluation that fails (a full disk, say) is logged and retried at the next tick,
    with the alert states as they were before it. When such an alert's ``for`` runs out
    sooner than the sinks took last time, its evaluation is run before the sinks, which
    then get both evaluations in order: notifying and supervising do not hold back a
    containment that is due.
    """
    recheck = dt.timedelta(seconds=interval)
    done = 0
    unsunk: list[Evaluation] = []
    sinking, deferred = dt.timedelta(0), False  # how long the sinks took last time
    while not stop.is_set() and (max_evaluations is None or done < max_evaluations):
        started = time.monotonic()
        if before_each is not None:
            before_each()
        try:
            unsunk.append(evaluator.evaluate(on_rule=on_rule, recheck=recheck))
        except Exception:
            log.exception("evaluation failed; retrying at the next interval")
        done += 1
        due, now = evaluator.due(), evaluator.clock()
        # An urgent alert whose `for` runs out before the sinks would be done is decided
        # first (once in a row: the sinks then get both evaluations, in order).
        deferred = not deferred and due is not None and due - now <= sinking
        if not deferred:
            for evaluation in unsunk:
                sink(evaluation)
            unsunk.clear()
            sinking = evaluator.clock() - now
        wait = interval - (time.monotonic() - started)
        due, now = evaluator.due(), evaluator.clock()
        if due is not None and due > now:  # an urgent alert's `for` runs out sooner
            wait = min(wait, (due - now).total_seconds())
        stop.wait(max(0.0, wait))
    for evaluation in unsunk:  # deferred for a `for` that runs out: the loop was stopped
        sink(evaluation)
    return done
