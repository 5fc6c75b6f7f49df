"""The rule evaluator: each rule measured, decided, recorded and handed on in turn.

:class:`Evaluator` does the I/O around the state machine (:mod:`.states`): it measures
rule after rule over a read of the lake (:mod:`.reads`), applies the state machine to
each rule's measurements, appends its transitions to ``alert_events`` and only then
hands them to the rule sink. So an alert that must be acted on is acted on as soon as its
own rule is decided, not after every other rule has been measured. Its state is rebuilt
from ``alert_events`` on start, so a restart neither forgets a firing alert nor
announces it twice.

Each query through the lake costs a metadata database round trip, so rules are measured over
reads (:class:`~agentwatch.alerts.evaluation.reads.RuleRead`): the rules of an
evaluation over one read, taken when the first of them is due, at whose time they are
evaluated; on a live clock the urgent rules instead over a fresh read of only what they
need, one per round, so each round sees the freshest events. On a live clock the
evaluation's read is taken on a thread of its own once the urgent rules' first round is
done, and they are measured again every ``recheck`` while it is under way: a slow read
of everything never holds back the containment of an agent.

Rules whose alerts act on agents (``urgent``: their runbook opens a breaker) are
measured first and, on a live clock, again between the other rules once ``recheck`` has
passed, taking at most half of the time (:func:`schedule`): their ``for`` is checked
about that often however many slow rules there are. On a live clock each rule is
evaluated at the time its events are read, so its ``for`` counts from when its
condition was seen, not from when the evaluation began.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import duckdb

from agentwatch.alerts.evaluation.reads import Cache, RuleRead
from agentwatch.alerts.evaluation.states import (
    AlertStates,
    Measurement,
    Transition,
    Verdict,
    restore_alerts,
    transitions_frame,
)
from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.model import Alert
from agentwatch.alerts.rules import Metric, Rule, Sample, Window, by_labels, metrics
from agentwatch.clock import Clock, utc_now
from agentwatch.processors.store.attach import StoreMissing
from agentwatch.processors.store.lake import LakeStore

log = logging.getLogger(__name__)

ALERT_EVENTS: Final = "alert_events"


@dataclass(frozen=True)
class Evaluation:
    """The result of one evaluation: what changed, what is active now, and every verdict."""

    at: dt.datetime  # when the evaluation began (its first rule's evaluation time)
    transitions: tuple[Transition, ...]
    alerts: tuple[Alert, ...]  # every pending and firing alert after this evaluation
    verdicts: tuple[Verdict, ...]  # each rule's latest
    errors: Mapping[str, str] = field(default_factory=dict)  # rule -> why it was not evaluated

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "firing"]

    @property
    def pending(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "pending"]

    @property
    def held(self) -> list[Verdict]:
        """Groups without a verdict for lack of samples or value."""
        return [v for v in self.verdicts if v.outcome == "held"]


@dataclass(frozen=True)
class RuleEvaluation:
    """One rule measured and decided at ``at``; its transitions are already recorded."""

    rule: str
    at: dt.datetime
    transitions: tuple[Transition, ...]


# What the integrator attaches: the notifier, the runbooks. An AlertSink is called once
# per evaluation, after the transitions are in alert_events, even when nothing changed
# (the notifier's repeat and group intervals run on it). A RuleSink is called as each
# rule is decided, before the next one is measured (the runbooks, which contain agents).
AlertSink = Callable[[Evaluation], None]
RuleSink = Callable[[RuleEvaluation], None]
Urgent = Callable[[Rule], bool]


def never_urgent(rule: Rule) -> bool:
    return False


def _always_ready(wait: dt.timedelta) -> bool:
    return True


def schedule(
    rules: Sequence[Rule],
    urgent: Urgent,
    recheck: dt.timedelta | None,
    clock: Clock,
    due: Callable[[], dt.datetime | None] = lambda: None,
    pending: Collection[str] = (),
    ready: Callable[[dt.timedelta], bool] = _always_ready,
) -> Iterator[Rule]:
    """The order one evaluation measures ``rules`` in: the urgent ones first, in their
    given order but those with a ``pending`` alert (whose ``for`` may run out, opening
    a breaker) before the others, then the others; before each of the others, the
    urgent ones again once ``recheck`` has passed since they were last begun (never
    when ``recheck`` is None) and the others have had at least as long as the urgent
    ones took, so however slow the urgent rules get, they take at most half of an
    evaluation; and, whatever that share, once ``due`` (when an urgent pending alert's
    ``for`` runs out) has come.

    ``ready`` waits at most the time it is given for what the others need (their read
    of the lake, taken meanwhile) and says whether it is there: until it is, the urgent
    ones are measured again every ``recheck`` and at ``due``, since waiting for a read
    costs the others nothing."""
    first = sorted((r for r in rules if urgent(r)), key=lambda r: r.name not in pending)
    rest = [r for r in rules if not urgent(r)]
    begun = clock()
    yield from first
    ended = clock()  # resumed once the last urgent rule has been measured

    def next_round() -> dt.timedelta:
        assert recheck is not None
        when, again = due(), begun + recheck
        return (min(again, when) if when is not None and when > begun else again) - clock()

    for rule in rest:
        while first and recheck is not None and not ready(next_round()):
            begun = clock()
            yield from first
            ended = clock()
        now = clock()
        again = recheck is not None and now - begun >= recheck and now - ended >= ended - begun
        when = due() if recheck is not None else None
        if first and (again or (when is not None and now >= when > begun)):
            begun = now
            yield from first
            ended = clock()
        yield rule


class Evaluator:
    """Evaluates rules against the store and records transitions beside it.

    ``db`` is the lake's metadata database (``--db``) written by ``agentwatch process``;
    ``alert_events`` go into the same lake. ``clock`` gives the evaluation times when
    :meth:`evaluate` is called without one; tests inject theirs. ``urgent`` picks the
    rules measured first (see the module doc).
    """

    def __init__(
        self,
        db: Path,
        rules: Sequence[Rule],
        catalog: Catalog,
        *,
        clock: Clock = utc_now,
        registry: Mapping[str, Metric] | None = None,
        urgent: Urgent = never_urgent,
    ) -> None:
        self.db = db
        self.store = LakeStore(db)
        self.rules: list[Rule] = list(rules)
        self.catalog = catalog
        self.clock = clock
        self.urgent = urgent
        self.registry = dict(registry) if registry is not None else metrics()
        self._check_rules(self.rules)
        self.states = AlertStates(restore_alerts(self.store.read_log(ALERT_EVENTS)))
        # Recorded (and handed to the rule sink) by an evaluation that then failed: its
        # evaluation sinks never saw them, so the next evaluation carries them.
        self._unreported: list[Transition] = []
        if self.states.alerts:
            log.info("alert states restored", extra={"active": len(self.states.alerts)})

    def update(self, rules: Sequence[Rule] | None = None, catalog: Catalog | None = None) -> None:
        """Swap in edited rules or catalog; alerts of removed rules resolve next evaluation."""
        if rules is not None:
            self._check_rules(rules)
            self.rules = list(rules)
        if catalog is not None:
            self.catalog = catalog

    def evaluate(
        self,
        now: dt.datetime | None = None,
        *,
        on_rule: RuleSink | None = None,
        recheck: dt.timedelta | None = None,
    ) -> Evaluation:
        """Evaluate every rule, record and return the result.

        At ``now`` when given (every rule at that instant, over one read), else on the
        clock: each rule at the time its read was taken (the evaluation's, or for the
        urgent rules their round's), the urgent ones again every ``recheck``. ``on_rule``
        gets each rule's transitions as soon as they are recorded. A recording that fails
        raises with the failing rule's alerts as they were before it.
        """
        start = now or self.clock()
        if start.tzinfo is None:
            raise ValueError("evaluation times must be timezone-aware (UTC)")
        live = now is None
        transitions, self._unreported = self._unreported, []
        verdicts: dict[str, list[Verdict]] = {}
        errors: dict[str, str] = {}
        # The evaluation's read; on a live clock the urgent rules' read of this round.
        reads: dict[bool, RuleRead | str] = {}
        # On a live clock the others' read is taken in the background (see ``schedule``).
        others = _Background(self.clock, lambda at: self._read(at, self._group(False)))
        try:
            pending = {a.rule for a in self.states.alerts if a.state == "pending"}
            order = schedule(
                self.rules, self.urgent, recheck if live else None, self.clock, self.due,
                pending, others.ready,
            )  # fmt: skip
            for n, rule in enumerate(order):
                group = live and self.urgent(rule)
                read = reads.get(group)
                if read is None or (isinstance(read, RuleRead) and rule.name in read.measured):
                    if isinstance(read, RuleRead):  # the urgent rules' next round
                        read.close()
                    at = self.clock() if live and n else start
                    if live and not group:
                        read = reads[group] = others.result(at)
                    else:
                        read = reads[group] = self._read(at, self._group(group, live))
                if isinstance(read, str):
                    errors[rule.name] = read
                    verdicts[rule.name] = self.states.hold(rule, f"not evaluated: {read}")
                    continue
                read.measured.add(rule.name)
                try:
                    changed, verdicts[rule.name] = self._decide(read, rule, errors)
                except BaseException:
                    self._unreported = transitions
                    raise
                transitions += changed
                if on_rule is not None:
                    _hand_on(on_rule, RuleEvaluation(rule.name, read.at, tuple(changed)))
        finally:
            late = others.settle()
            if late is not None:  # closed below whether it was used or not
                reads[False] = late
            for each in reads.values():
                if isinstance(each, RuleRead):
                    each.close()
        end = self.clock() if live else start
        before = self.states.snapshot()
        retired = self.states.retire((r.name for r in self.rules), end)
        if retired:
            try:
                self._record(retired, end)
            except BaseException:
                self.states.restore(before)
                self._unreported = transitions
                raise
        transitions += retired
        ordered = [v for r in self.rules for v in verdicts.get(r.name, [])]
        return Evaluation(
            start, tuple(transitions), tuple(self.states.alerts), tuple(ordered), errors
        )

    def due(self) -> dt.datetime | None:
        """When the ``for`` of the first pending alert of an urgent rule runs out: the
        moment to measure the urgent rules again (the loop wakes up for it too)."""
        urgent = {r.name: r for r in self.rules if self.urgent(r)}
        times = [
            a.starts_at + urgent[a.rule].for_
            for a in self.states.alerts
            if a.state == "pending" and a.rule in urgent
        ]
        return min(times, default=None)

    def _group(self, urgent: bool, live: bool = True) -> list[Rule]:
        """The rules read together: on a live clock the urgent ones apart from the others."""
        return [r for r in self.rules if (live and self.urgent(r)) == urgent]

    def _read(self, at: dt.datetime, rules: Sequence[Rule]) -> RuleRead | str:
        """A read of what ``rules`` need at ``at``, or why the lake cannot be read."""
        try:
            return RuleRead.take(self.db, at, rules, self.registry, self.catalog)
        except StoreMissing as exc:
            return str(exc)
        except duckdb.Error as exc:
            log.warning("lake not read", extra={"error": str(exc)})
            return f"cannot read {self.db}: {str(exc).splitlines()[0]}"

    def _decide(
        self, read: RuleRead, rule: Rule, errors: dict[str, str]
    ) -> tuple[list[Transition], list[Verdict]]:
        """Measure ``rule`` over ``read``, decide and record; a query that fails holds
        its alerts."""
        at = read.at
        try:
            measured = self.measure_rule(read.con, rule, at, read.cache)
        except duckdb.Error as exc:
            log.warning("rule not evaluated", extra={"rule": rule.name, "error": str(exc)})
            errors[rule.name] = str(exc).splitlines()[0]
            return [], self.states.hold(rule, f"not evaluated: {errors[rule.name]}")
        before = self.states.snapshot()
        changed, decided = self.states.apply(rule, measured, at)
        if changed:
            try:
                self._record(changed, at)
            except Exception:
                self.states.restore(before)  # not recorded, so not happened: retry next time
                raise
        return changed, decided

    def _record(self, transitions: Sequence[Transition], at: dt.datetime) -> None:
        self.store.append_log(ALERT_EVENTS, transitions_frame(transitions, at))
        for change in transitions:
            log.info(
                "alert %s",
                change.alert.state,
                extra={
                    "rule": change.alert.rule,
                    "fingerprint": change.alert.fingerprint,
                    "previous": change.previous,
                    "labels": dict(change.alert.labels),
                    "value": change.alert.value,
                },
            )

    # ------------------------------------------------------------------ measuring

    def measure_rule(
        self,
        con: duckdb.DuckDBPyConnection,
        rule: Rule,
        at: dt.datetime,
        cache: Cache,
    ) -> list[Measurement]:
        """One rule's measurements at ``at`` over ``con`` (also what a backtest replays)."""
        metric = self.registry[rule.metric]

        def samples(window: Window) -> list[Sample]:
            key = (metric.name, window.start, window.end)
            if key not in cache:
                cache[key] = metric.measure(con, window)
            return cache[key]

        spans = rule_windows(rule)
        current = samples(Window(at - spans[0][0], at - spans[0][1]))
        if rule.change is None:
            rows = [(s, s.value, s.samples, "") for s in current]
        else:
            earlier = by_labels(samples(Window(at - spans[1][0], at - spans[1][1])))
            # A group seen in no window before the previous one may have started during
            # it: a partly filled previous window would make any steady traffic a spike.
            before = by_labels(samples(Window(at - spans[2][0], at - spans[2][1])))
            rows = []
            for s in current:
                key = tuple(sorted(s.labels.items()))
                prev = earlier.get(key)
                value, note = _change(rule, s, prev)
                if value is not None and key not in before:
                    value, note = None, "no data before the previous window: it may be partial"
                basis = min(s.samples, prev.samples) if prev is not None else 0
                rows.append((s, value, basis, note))
        return [
            Measurement(
                labels=s.labels,
                value=value,
                samples=basis,
                threshold=rule.threshold_for(s.labels, self.catalog),
                context=self._context(s.labels),
                note=note,
            )
            for s, value, basis, note in rows
        ]

    def _context(self, labels: Mapping[str, str]) -> dict[str, str]:
        entry = self.catalog.get(labels.get("agent_id", ""))
        if entry is None:
            return {}
        return {"owner": entry.owner, "oncall": entry.oncall, "risk_tier": entry.risk_tier}

    def _check_rules(self, rules: Sequence[Rule]) -> None:
        missing = sorted({r.metric for r in rules} - set(self.registry))
        if missing:
            raise ValueError(f"rules name unregistered metrics: {', '.join(missing)}")


class _Background:
    """A read taken on a thread of its own from when it is first waited for, so that
    the urgent rules can be measured meanwhile."""

    def __init__(self, clock: Clock, take: Callable[[dt.datetime], RuleRead | str]) -> None:
        self._clock, self._take = clock, take
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[RuleRead | str] | None = None

    def ready(self, wait: dt.timedelta) -> bool:
        """Start the read if it has not begun; whether it is done within ``wait``."""
        if self._future is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rules-read")
            self._future = self._pool.submit(self._take, self._clock())
        done, _ = futures_wait([self._future], timeout=max(0.0, wait.total_seconds()))
        return bool(done)

    def result(self, at: dt.datetime) -> RuleRead | str:
        """The read; taken here and now, at ``at``, if it has not been begun."""
        return self._take(at) if self._future is None else self._future.result()

    def settle(self) -> RuleRead | str | None:
        """Wait for a read still under way (what it raised is dropped: the evaluation
        has raised or used it); the read, to be closed, and the thread ended."""
        if self._future is None or self._pool is None:
            return None
        self._pool.shutdown(wait=True)
        return None if self._future.exception() is not None else self._future.result()


def rule_windows(rule: Rule) -> list[tuple[dt.timedelta, dt.timedelta]]:
    """The windows a rule measures, as (start, end) before its evaluation time: its
    window, and for a change rule the previous one and the one before that."""
    w = rule.window
    return [(w, dt.timedelta(0))] + ([(2 * w, w), (3 * w, 2 * w)] if rule.change else [])


def _change(rule: Rule, current: Sample, previous: Sample | None) -> tuple[float | None, str]:
    """The rate-of-change value of one group: this window against the one before."""
    if previous is None or previous.value is None or current.value is None:
        return None, "no value in one of the two windows compared"
    if rule.change == "delta":
        return current.value - previous.value, ""
    if previous.value == 0:
        return None, "the previous window's value is 0, so a ratio is undefined"
    return current.value / previous.value, ""


def _hand_on(sink: RuleSink, result: RuleEvaluation) -> None:
    """A rule sink that fails is logged; the transitions are recorded, the others go on."""
    try:
        sink(result)
    except Exception:
        log.exception("rule sink failed", extra={"rule": result.rule})
