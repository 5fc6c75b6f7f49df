"""Runbook files: what a runbook says, read and checked from its YAML file.

A runbook is a YAML file in ``alerts/runbooks/`` (its ``id`` is what a rule's
``runbook_url`` ends with): an ordered list of steps, each one of ``open_breaker``,
``disable_tool``, ``rollback``, ``throttle``, ``notify_owner`` and ``wait_for_approval``,
with why it is there, its parameters and what a failure does. Running one is
``runbooks.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from agentwatch.decoding import did_you_mean
from agentwatch.durations import DurationError, parse_seconds
from agentwatch.errors import ConfigError

RUNBOOK_DIR: Final = Path(__file__).resolve().parents[1] / "runbooks"
STEP_ACTIONS: Final = (
    "open_breaker",
    "disable_tool",
    "rollback",
    "throttle",
    "notify_owner",
    "wait_for_approval",
)
# The steps that halt an agent or a tool: a rule whose runbook has one is urgent.
BREAKER_ACTIONS: Final = frozenset({"open_breaker", "disable_tool"})


class RunbookError(ConfigError, ValueError):
    """A runbook file that cannot be used, or an approval that matches nothing: a command
    reports it in one line, as any setting it cannot use."""


@dataclass(frozen=True)
class Step:
    """One step: its action, why it is there, its parameters, what a failure does."""

    action: str
    why: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    on_failure: Literal["stop", "continue"] = "stop"


@dataclass(frozen=True)
class Runbook:
    id: str
    title: str
    steps: tuple[Step, ...]
    description: str = ""
    path: Path | None = None
    # A silence on the alert also holds its runbook, unless the runbook says otherwise.
    run_when_silenced: bool = False


_STEP_PARAMS: Final[Mapping[str, frozenset[str]]] = {
    "open_breaker": frozenset({"tool", "tool_label", "cooldown"}),
    "disable_tool": frozenset({"tool", "tool_label", "cooldown"}),
    "rollback": frozenset({"only"}),
    "throttle": frozenset({"rate"}),
    "notify_owner": frozenset({"message"}),
    "wait_for_approval": frozenset({"prompt"}),
}


def parse_runbook(doc: object, source: str = "<runbook>") -> Runbook:
    """Check a runbook document; every mistake is reported with the file and step."""
    if not isinstance(doc, dict):
        raise RunbookError(f"{source}: a runbook is a mapping with id, title and steps")
    rid = doc.get("id")
    if not isinstance(rid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rid):
        raise RunbookError(f"{source}: id must be lower-case words joined by '-', got {rid!r}")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RunbookError(f"{source}: steps must be a non-empty list")
    steps = []
    for n, raw in enumerate(raw_steps, 1):
        where = f"{source}: step {n}"
        if not isinstance(raw, dict) or "action" not in raw:
            raise RunbookError(f"{where}: a step is a mapping with an action")
        action = raw["action"]
        if action not in STEP_ACTIONS:
            raise RunbookError(f"{where}: unknown action {action!r} ({', '.join(STEP_ACTIONS)})")
        params = {k: v for k, v in raw.items() if k not in ("action", "why", "on_failure")}
        unknown = set(params) - _STEP_PARAMS[action]
        if unknown:
            hint = did_you_mean(sorted(unknown), _STEP_PARAMS[action])
            raise RunbookError(f"{where}: {action} takes no {', '.join(sorted(unknown))}{hint}")
        if "cooldown" in params:
            try:
                params["cooldown"] = parse_seconds(params["cooldown"])
            except DurationError as exc:
                raise RunbookError(f"{where}: cooldown: {exc}") from None
        if action == "throttle":
            rate = params.get("rate")
            if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
                raise RunbookError(f"{where}: rate is calls per second > 0, or null to lift")
        on_failure = raw.get("on_failure", "stop")
        if on_failure not in ("stop", "continue"):
            raise RunbookError(f"{where}: on_failure is stop or continue")
        steps.append(Step(action, str(raw.get("why", "")), params, on_failure))
    run_when_silenced = doc.get("run_when_silenced", False)
    if not isinstance(run_when_silenced, bool):
        raise RunbookError(f"{source}: run_when_silenced is true or false")
    return Runbook(
        id=rid,
        title=str(doc.get("title", rid)),
        steps=tuple(steps),
        description=str(doc.get("description", "")),
        run_when_silenced=run_when_silenced,
    )


def load_runbook(path: Path) -> Runbook:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunbookError(f"{path}: {exc}") from None
    book = parse_runbook(doc, str(path))
    if path.stem != book.id:
        raise RunbookError(f"{path}: the file name must be the id ({book.id}.yaml)")
    return Runbook(book.id, book.title, book.steps, book.description, path)


def load_runbooks(directory: Path = RUNBOOK_DIR) -> dict[str, Runbook]:
    """Every ``*.yaml`` runbook of a directory, by id."""
    if not directory.is_dir():
        raise RunbookError(f"runbook directory {directory} does not exist")
    books = [load_runbook(p) for p in sorted(directory.glob("*.yaml"))]
    return {b.id: b for b in books}


def dangling(url: str, runbooks: Mapping[str, Runbook]) -> bool:
    """True when ``url`` names a runbook of ours (``runbooks/<id>.yaml``) that is not there;
    an http(s) ``runbook_url`` is a page for people, never run."""
    return url.startswith("runbooks/") and find_runbook(url, runbooks) is None


def runbook_id(url: str) -> str:
    """The runbook id a ``runbook_url`` names: its last path segment, minus an extension.

    ``runbooks/contain-agent``, ``https://wiki/runbooks/contain-agent.yaml#steps`` and
    ``contain-agent`` all name ``contain-agent``.
    """
    path = re.split(r"[?#]", url.strip(), maxsplit=1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    return re.sub(r"\.(ya?ml|md|html?)$", "", last)


def find_runbook(url: str, runbooks: Mapping[str, Runbook]) -> Runbook | None:
    return runbooks.get(runbook_id(url))


def opens_breaker(runbook: Runbook) -> bool:
    """True when a step of ``runbook`` halts an agent or one of its tools."""
    return any(step.action in BREAKER_ACTIONS for step in runbook.steps)


__all__ = [
    "BREAKER_ACTIONS",
    "RUNBOOK_DIR",
    "STEP_ACTIONS",
    "Runbook",
    "RunbookError",
    "Step",
    "find_runbook",
    "load_runbook",
    "load_runbooks",
    "opens_breaker",
    "parse_runbook",
    "runbook_id",
]
