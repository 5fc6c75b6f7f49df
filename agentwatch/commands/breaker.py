"""The ``breaker`` command: people look at, open and close circuit breakers.

Every open and close is published on the control topic and recorded in the ``actions``
table as ``person:<name>``, like the steps runbooks take, so the audit trail shows who
stopped or released an agent and why. ``status`` reads the topic and, when the catalog
exists, whether each open breaker's agent has confirmed that it halted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from typing import Any

from rich import box
from rich.console import Console

from agentwatch.alerts.governance.registry import apply_registry
from agentwatch.alerts.response.audit import action_row, record_actions
from agentwatch.alerts.response.breaker import BreakerError
from agentwatch.alerts.response.control import (
    BreakerControl,
    BreakerStatus,
    ControlError,
    Transition,
    retired_agents,
)
from agentwatch.alerts.response.incident import confirmed_ids
from agentwatch.clock import utc_now
from agentwatch.commands.alerts_group import add_catalog_option, catalog_from_args
from agentwatch.commands.options import (
    add_bootstrap_option,
    add_control_topic_option,
    add_db_option,
    control_keyring,
    given,
)
from agentwatch.durations import duration_argument
from agentwatch.ingest.contract.control import new_message_id
from agentwatch.processors.store.lake import LakeStore
from agentwatch.settings import Settings
from agentwatch.terminal import Table, text

NO_CATALOG_HOLDS = "no retired agents are held open"


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Circuit breakers per agent and per agent+tool, kept on the compacted control "
        "topic that every agent's SDK follows. While a breaker is open the agent's "
        "guarded llm and tool calls raise AgentHalted before they run."
    )
    actions = parser.add_subparsers(dest="breaker_action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_bootstrap_option(common, settings)
    add_control_topic_option(common, settings)
    add_db_option(common, settings, "the store, which holds the actions table")
    add_catalog_option(common, settings)
    change = argparse.ArgumentParser(add_help=False, parents=[common])
    change.add_argument("agent", type=given, metavar="AGENT", help="the agent id")
    change.add_argument("--tool", type=given, help="only this tool (or model) of the agent")
    change.add_argument("--reason", type=given, required=True, help="why: recorded with the change")
    change.add_argument(
        "--by",
        type=given,
        default=_user(),
        metavar="NAME",
        help="who (default: the login, %(default)s)",
    )

    status = actions.add_parser(
        "status", parents=[common], help="list the breakers, their state and confirmation"
    )
    status.add_argument("agent", type=given, metavar="AGENT", nargs="?", help="only this agent")
    status.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table for people, json (a list of breaker objects) for tools (default %(default)s)",
    )
    status.set_defaults(handler=_cmd_status)

    opened = actions.add_parser(
        "open", parents=[change], help="open a breaker: the agent halts before its next call"
    )
    opened.add_argument(
        "--cooldown",
        type=duration_argument,
        default=settings.value("breaker", "cooldown"),
        help="time before a probe may close it again, e.g. 30s, 10m, 2h (default %(default)s)",
    )
    opened.set_defaults(handler=_cmd_open)

    closed = actions.add_parser(
        "close", parents=[change], help="close a breaker: the agent's calls go through again"
    )
    closed.set_defaults(handler=_cmd_close)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _record(args: argparse.Namespace, action: str, result: str, detail: dict[str, Any]) -> None:
    store = LakeStore(args.db)
    control_id = detail.get("control_id")
    record_actions(
        store,
        [
            action_row(
                ts=utc_now(),
                action_id=str(control_id or new_message_id()),
                action=action,
                agent_id=args.agent,
                tool_name=args.tool,
                actor=f"person:{args.by}",
                reason=args.reason,
                result=result,
                detail=detail,
            )
        ],
    )


def _change(args: argparse.Namespace, action: str) -> int:
    name = args.agent + (f"/{args.tool}" if args.tool else "")
    control: BreakerControl | None = None
    keyring = control_keyring(args)  # ConfigError: exit 2 with the message, nothing recorded
    catalog = apply_registry(args.db, catalog_from_args(args, NO_CATALOG_HOLDS))
    retired = retired_agents(catalog)
    try:
        control = BreakerControl.connect(
            args.bootstrap, args.control_topic, keyring=keyring, retired=retired
        )
        transition: Transition
        if action == "open_breaker":
            cooldown = args.cooldown.total_seconds()
            transition = control.open(
                args.agent,
                args.tool,
                reason=args.reason,
                actor=f"person:{args.by}",
                cooldown_s=cooldown,
            )
        else:
            transition = control.close(
                args.agent, args.tool, reason=args.reason, actor=f"person:{args.by}"
            )
    except (ControlError, BreakerError, ValueError) as exc:
        _record(args, action, "failed", {"breaker": name, "error": str(exc)})
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. the broker is unreachable when creating the topic
        _record(args, action, "failed", {"breaker": name, "error": repr(exc)})
        print(f"agentwatch: could not reach the control topic: {exc}", file=sys.stderr)
        return 1
    finally:
        if control is not None:
            control.disconnect()
    published = transition.published
    state = transition.breaker.state
    if published is None:
        _record(args, action, "skipped", {"breaker": name, "already": state})
        print(f"breaker {name} is already {state}")
        return 0
    _record(
        args,
        action,
        "ok",
        {
            "breaker": name,
            "state": state,
            "control_id": published.message.id,
            "control_offset": published.offset,
            "cooldown_s": published.message.cooldown_s,
        },
    )
    print(f"breaker {name} is now {state} (control message {published.message.id})")
    return 0


def _cmd_open(args: argparse.Namespace) -> int:
    return _change(args, "open_breaker")


def _cmd_close(args: argparse.Namespace) -> int:
    return _change(args, "close_breaker")


def _cmd_status(args: argparse.Namespace) -> int:
    retired = retired_agents(apply_registry(args.db, catalog_from_args(args, NO_CATALOG_HOLDS)))
    control = BreakerControl.connect(
        args.bootstrap,
        args.control_topic,
        keyring=control_keyring(args),
        create=False,
        retired=retired,
    )
    try:
        statuses = control.status()
    except ControlError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    finally:
        control.disconnect()
    if control.topic.rejected:
        print(
            f"agentwatch: ignored {control.topic.rejected} control record(s) without a valid "
            "signature (see docs/security.md)",
            file=sys.stderr,
        )
    if args.agent:
        statuses = [s for s in statuses if s.breaker.key.agent_id == args.agent]
    ids = [s.applied.message.id for s in statuses if s.applied and s.breaker.state != "closed"]
    confirmed = confirmed_ids(args.db, ids)
    now = utc_now()
    rows = [_status_row(s, confirmed, now) for s in statuses]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no breakers: every agent's calls go through")
        return 0
    console = Console(highlight=False)
    console.width = max(120, console.width)  # keep rows whole when piped
    console.print(status_table(rows))
    return 0


def status_table(rows: list[dict[str, Any]]) -> Table:
    """The breakers as a table; reasons, actors and keys are shown as written."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in ("breaker", "state", "since", "cooldown", "confirmed", "by"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason")
    styles = {"open": "bold red", "half_open": "yellow", "closed": "green"}
    for row in rows:
        table.add_row(
            row["breaker"],
            text(row["state"], styles.get(row["state"], "")),
            row["since"] or "",
            row["cooldown"],
            row["confirmed"],
            row["actor"],
            row["reason"],
        )
    return table


def _status_row(
    status: BreakerStatus, confirmed: set[str] | None, now: dt.datetime
) -> dict[str, Any]:
    b = status.breaker
    message = status.applied.message if status.applied else None
    ends = b.cooldown_ends()
    if b.state != "open":
        cooldown = "-"
    elif b.held:
        cooldown = "held (retired)"
    elif ends is not None and ends > now:
        cooldown = f"{int((ends - now).total_seconds())} s left"
    else:
        cooldown = "over: probe due"
    if b.state == "closed" or message is None:
        confirm = "-"
    elif confirmed is None:
        confirm = "unknown (no catalog)"
    else:
        confirm = "yes" if message.id in confirmed else "not yet"
    return {
        "breaker": str(b.key),
        "state": b.state,
        "since": b.since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if b.since else None,
        "cooldown": cooldown,
        "confirmed": confirm,
        "actor": b.actor,
        "reason": b.reason,
        "control_id": message.id if message else None,
    }
