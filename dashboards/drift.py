"""The drift dashboard: whether agents, releases, prompts and models still behave as before.

From ``agentwatch drift run --metrics-port``: each agent's latest evaluated window, per
signal; no environment or version label (release comparisons name their versions).
"""

from __future__ import annotations

from typing import Final

from agentwatch.dashboards.numbers import (
    AGENT_LINK,
    AGENT_ONLY,
    RED_FROM_ONE,
)
from agentwatch.dashboards.panels import (
    COUNT,
    SCORE,
    SECONDS,
    DashboardSpec,
    Query,
    Row,
    column,
    higher_is_worse,
    label_picker,
    selector,
    stat,
    table,
    timeseries,
)
from agentwatch.processors.metrics import series

DRIFT_SCORE: Final = series.DRIFT_SCORE.name
DRIFT_DETECTED: Final = series.DRIFT_DETECTED.name
DRIFT_INSUFFICIENT: Final = series.DRIFT_INSUFFICIENT.name
DRIFT_WINDOW_END: Final = series.DRIFT_WINDOW_END.name
RELEASE_SCORE: Final = series.RELEASE_SCORE.name
RELEASE_DETECTED: Final = series.RELEASE_DETECTED.name
DRIFT_SCOPE: Final = 'agent_id=~"$agent", signal=~"$signal"'
# Severity: 1 is the test's threshold, so red is a drift verdict and yellow a near miss.
SEVERITY_LEVELS: Final = higher_is_worse(0.8, 1.0)
RELEASE: Final = ("agent_id", "dimension", "baseline", "candidate")
_SEVERITY_TEXT: Final = (
    "Severity puts every test on one scale where 1 is its threshold: at or above 1 the "
    "test found drift. Yellow from 0.8, red from 1."
)


def _drift(metric: str) -> str:
    return selector(metric, scope=DRIFT_SCOPE)


DRIFT_AGENT: Final = label_picker(
    "agent", "Agent", DRIFT_SCORE, "agent_id", "Agents with drift results.",
)  # fmt: skip
SIGNAL: Final = label_picker(
    "signal", "Signal", DRIFT_SCORE, "signal", "Signals tested for the chosen agents.",
    scope=AGENT_ONLY,
)  # fmt: skip

DRIFT: Final = DashboardSpec(
    uid="agentwatch-drift",
    title="agentwatch / Drift",
    description="Whether agents still behave as when they were approved, and whether new "
    "releases, prompts and models behave like the ones they replace: drift scores and "
    "verdicts per signal over time.",
    variables=(DRIFT_AGENT, SIGNAL),
    rows=(
        Row("Latest window", (
            stat("Agents drifting", "Agents with at least one signal found drifting in their "
                 "latest window. Yellow from 1, red from 3.",
                 f"sum(max by (agent_id) ({_drift(DRIFT_DETECTED)}))", COUNT,
                 higher_is_worse(1, 3), width=4),
            stat("Signals drifting", "Agent and signal pairs found drifting in the latest "
                 "window. Yellow from 1, red from 5.", f"sum({_drift(DRIFT_DETECTED)})", COUNT,
                 higher_is_worse(1, 5), width=4),
            stat("Worst severity", "The largest severity of any signal. " + _SEVERITY_TEXT,
                 f"max({_drift(DRIFT_SCORE)})", SCORE, SEVERITY_LEVELS, decimals=2, width=4),
            stat("Releases drifting", "New releases, prompts or models found unlike the stable "
                 "one they run beside, on at least one signal. Red from 1.",
                 f"sum(max by ({', '.join(RELEASE)}) ({_drift(RELEASE_DETECTED)}))", COUNT,
                 RED_FROM_ONE, width=4),
            stat("Signals without enough data", "Agent and signal pairs no test could judge "
                 "for lack of samples (not the same as no drift).",
                 f"sum({_drift(DRIFT_INSUFFICIENT)})", COUNT, width=4),
            stat("Evaluation lag", "Time since the end of the latest evaluated window (the "
                 "oldest among the agents). Windows are evaluated an hour apart, a few minutes "
                 "after they end: yellow from 2 hours, red from 3 (the evaluator is behind).",
                 f"time() - min({selector(DRIFT_WINDOW_END, scope=AGENT_ONLY)})", SECONDS,
                 higher_is_worse(7200, 10800), decimals=0, width=4),
        )),
        Row("Scores and verdicts over time", (
            timeseries("Drift severity by signal", "The largest severity of each signal among "
                       "the selected agents. " + _SEVERITY_TEXT, SCORE,
                       Query(f"max by (signal) ({_drift(DRIFT_SCORE)})", "{{signal}}"),
                       thresholds=SEVERITY_LEVELS),
            timeseries("Drift severity by agent", "The largest severity of any signal of each "
                       "agent. " + _SEVERITY_TEXT, SCORE,
                       Query(f"max by (agent_id) ({_drift(DRIFT_SCORE)})", "{{agent_id}}"),
                       thresholds=SEVERITY_LEVELS),
            timeseries("Signals drifting by agent", "How many signals of each agent were found "
                       "drifting.", COUNT,
                       Query(f"sum by (agent_id) ({_drift(DRIFT_DETECTED)})", "{{agent_id}}"),
                       stack=True),
            timeseries("Signals without enough data by agent", "How many signals of each "
                       "agent no test could judge for lack of samples.", COUNT,
                       Query(f"sum by (agent_id) ({_drift(DRIFT_INSUFFICIENT)})",
                             "{{agent_id}}"), stack=True),
            table(
                "Signals now", "Each agent's signals in its latest window, most severe first: "
                "1 in Drift means a test found it drifting. Click an agent for its dashboard.",
                ("agent_id", "signal"),
                column("Severity", f"max by (agent_id, signal) ({_drift(DRIFT_SCORE)})", SCORE,
                       SEVERITY_LEVELS, decimals=2),
                column("Drift", f"max by (agent_id, signal) ({_drift(DRIFT_DETECTED)})", COUNT,
                       RED_FROM_ONE),
                key="signals", links=(AGENT_LINK,), height=10,
            ),
        )),
        Row("Releases compared", (
            table(
                "Releases compared", "Each new release, prompt or model (first seen in the "
                "last day) against the stable one it runs beside, over the same period: how "
                "many signals differ, and how much. Click an agent to compare its versions "
                "on its dashboard.", RELEASE,
                column("Signals drifting", f"sum by ({', '.join(RELEASE)}) "
                       f"({_drift(RELEASE_DETECTED)})", COUNT, RED_FROM_ONE),
                column("Signals tested", f"count by ({', '.join(RELEASE)}) "
                       f"({_drift(RELEASE_DETECTED)})"),
                column("Worst severity", f"max by ({', '.join(RELEASE)}) "
                       f"({_drift(RELEASE_SCORE)})", SCORE, SEVERITY_LEVELS, decimals=2),
                key="releases", links=(AGENT_LINK,), height=7,
            ),
            timeseries("Release drift severity", "The largest severity of each new release "
                       "against its stable one. " + _SEVERITY_TEXT, SCORE,
                       Query(f"max by ({', '.join(RELEASE)}) ({_drift(RELEASE_SCORE)})",
                             "{{agent_id}} {{dimension}} {{candidate}} vs {{baseline}}"),
                       thresholds=SEVERITY_LEVELS),
            timeseries("Release signals drifting", "How many signals of each new release "
                       "differ from its stable one.", COUNT,
                       Query(f"sum by ({', '.join(RELEASE)}) ({_drift(RELEASE_DETECTED)})",
                             "{{agent_id}} {{dimension}} {{candidate}} vs {{baseline}}"),
                       stack=True),
        )),
    ),
)  # fmt: skip
