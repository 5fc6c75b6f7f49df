"""Runbook files: what a runbook says, read and checked from its YAML file.

A runbook is a YAML file in ``alerts/runbooks/`` (its ``id`` is what a rule's
``runbook_url`` ends with): an ordered list of steps, each one of ``open_breaker``,
``disable_tool``, ``rollback``, ``throttle``, ``notify_owner`` and ``wait_for_approval``,
with why it is there, its parameters and what a failure does. Running one is
``runbooks.py``.

A file decodes into the structs below, one per action, whose fields are the keys that
action takes: a misspelt or misplaced key, a value of the wrong type or a bad duration
stops the load with one line naming the file and the key path
(``x.yaml: steps[0]: open_breaker takes no cooldwn (did you mean cooldown?)``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from agentwatch.decoding import decode
from agentwatch.durations import DurationError, parse_seconds
from agentwatch.errors import ConfigError
from agentwatch.yamlfile import read_yaml

RUNBOOK_DIR: Final = Path(__file__).resolve().parents[1] / "runbooks"


class RunbookError(ConfigError, ValueError):
    """A runbook file that cannot be used, or an approval that matches nothing: a command
    reports it in one line, as any setting it cannot use."""


OnFailure = Literal["stop", "continue"]


class _StepDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="action"):
    """What every step may say. The keys of its action (a subclass) are its parameters:
    only those written in the file, so the executor's own defaults apply to the rest."""

    why: str = ""
    on_failure: OnFailure = "stop"


class _BreakerStep(_StepDoc, frozen=True):
    """A step that halts an agent or one of its tools: a rule whose runbook has one is
    urgent."""

    tool: str | msgspec.UnsetType = msgspec.UNSET
    tool_label: str | msgspec.UnsetType = msgspec.UNSET
    cooldown: str | float | msgspec.UnsetType = msgspec.UNSET


class _OpenBreaker(_BreakerStep, frozen=True, tag="open_breaker"):
    """Opens the agent's breaker, or the agent+tool one when a tool is named."""


class _DisableTool(_BreakerStep, frozen=True, tag="disable_tool"):
    """Opens the agent+tool breaker."""


class _Rollback(_StepDoc, frozen=True, tag="rollback"):
    """``only``: which of the pinned versions to go back to (default: all)."""

    only: str | tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET


class _Throttle(_StepDoc, frozen=True, tag="throttle"):
    """``rate`` in calls per second; null lifts the throttle."""

    rate: Annotated[float, msgspec.Meta(gt=0)] | msgspec.UnsetType | None = msgspec.UNSET


class _NotifyOwner(_StepDoc, frozen=True, tag="notify_owner"):
    message: str | msgspec.UnsetType = msgspec.UNSET


class _WaitForApproval(_StepDoc, frozen=True, tag="wait_for_approval"):
    prompt: str | msgspec.UnsetType = msgspec.UNSET


_AnyStep = _OpenBreaker | _DisableTool | _Rollback | _Throttle | _NotifyOwner | _WaitForApproval
STEP_ACTIONS: Final = tuple(str(s.__struct_config__.tag) for s in get_args(_AnyStep))
BREAKER_ACTIONS: Final = frozenset(
    str(s.__struct_config__.tag) for s in get_args(_AnyStep) if issubclass(s, _BreakerStep)
)
_COMMON: Final = frozenset(f.name for f in msgspec.structs.fields(_StepDoc))


class _RunbookDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A runbook file as written; a silence on the alert also holds its runbook, unless
    ``run_when_silenced`` says otherwise."""

    id: str
    steps: Annotated[tuple[_AnyStep, ...], msgspec.Meta(min_length=1)]
    title: str | None = None  # None: the id
    description: str = ""
    run_when_silenced: bool = False


@dataclass(frozen=True)
class Step:
    """One step: its action, why it is there, its parameters, what a failure does."""

    action: str
    why: str
    params: Mapping[str, Any]
    on_failure: OnFailure


@dataclass(frozen=True)
class Runbook:
    id: str
    title: str
    steps: tuple[Step, ...]
    description: str
    run_when_silenced: bool
    path: Path | None = None


def parse_runbook(doc: object, source: str = "<runbook>") -> Runbook:
    """Check a runbook document; the first mistake is reported with the file and key path."""
    book = decode(doc, _RunbookDoc, "", source, error=RunbookError)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", book.id):
        raise RunbookError(f"{source}: id: must be lower-case words joined by '-', got {book.id!r}")
    return Runbook(
        id=book.id,
        title=book.id if book.title is None else book.title,
        steps=tuple(_step(s, f"{source}: steps[{i}]") for i, s in enumerate(book.steps)),
        description=book.description,
        run_when_silenced=book.run_when_silenced,
    )


def _step(doc: _StepDoc, where: str) -> Step:
    """A decoded step with its parameters (cooldown in seconds) as the executor reads them."""
    params = {
        f.name: getattr(doc, f.name)
        for f in msgspec.structs.fields(doc)
        if f.name not in _COMMON and getattr(doc, f.name) is not msgspec.UNSET
    }
    if "cooldown" in params:
        try:
            params["cooldown"] = parse_seconds(params["cooldown"])
        except DurationError as exc:
            raise RunbookError(f"{where}.cooldown: {exc}") from None
    return Step(str(doc.__struct_config__.tag), doc.why, params, doc.on_failure)


def load_runbook(path: Path) -> Runbook:
    book = parse_runbook(read_yaml(path, RunbookError), str(path))
    if path.stem != book.id:
        raise RunbookError(f"{path}: the file name must be the id ({book.id}.yaml)")
    return dataclasses.replace(book, path=path)


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
