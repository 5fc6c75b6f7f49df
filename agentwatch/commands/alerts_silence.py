"""``agentwatch alerts silence|silences|expire``: mute notifications for a while, by labels.

Why on the command line: silencing is what people do in the middle of an incident or a
deployment, from wherever they are. Silences live in ``silences.json`` in the data dir
(next to the lake's metadata file); a running notifier picks them up at its next look.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Final

from rich import box
from rich.console import Console

from agentwatch.alerts.notify.routing import Matcher, RoutingError
from agentwatch.alerts.notify.silences import Silence, SilenceError, SilenceStore
from agentwatch.clock import utc_now
from agentwatch.commands.options import add_db_option, given
from agentwatch.durations import TIME_EXAMPLES, duration_argument, format_duration, time_argument
from agentwatch.settings import ConfigError, Settings
from agentwatch.terminal import Table

SILENCE_FOR: Final = dt.timedelta(hours=2)
"""How long a silence lasts unless told: long enough for a deployment or an incident."""


def register_silence(add: argparse.ArgumentParser, settings: Settings) -> None:
    """``alerts silence``."""
    add.description = (
        "Create a silence: alerts whose labels match every --match are not announced "
        "until it ends (they are still evaluated, and recorded as suppressed). Prints "
        "the silence id, for `agentwatch alerts expire`."
    )
    add.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="MATCHER",
        help="label matcher: name=value, name!=value, name=~regex or name!~regex; repeat for "
        "several (all must hold), e.g. --match agent_id=support-bot --match severity=warning",
    )
    add.add_argument(
        "--for",
        dest="duration",
        type=duration_argument,
        default=SILENCE_FOR,
        metavar="DURATION",
        help=f"how long, e.g. 30m, 2h, 1d (default {format_duration(SILENCE_FOR)})",
    )
    add.add_argument(
        "--start",
        type=time_argument,
        metavar="TIME",
        help=f"when it starts: {TIME_EXAMPLES} (UTC without a zone; default: now)",
    )
    add.add_argument(
        "--comment", type=given, required=True, help="why: people reading the list need it"
    )
    add.add_argument("--author", type=given, default=_user(), help="who (default: %(default)s)")
    add_db_option(add, settings)
    add.set_defaults(handler=_silence)


def register_silences(ls: argparse.ArgumentParser, settings: Settings) -> None:
    """``alerts silences``."""
    ls.description = "List active and pending silences (--all: expired ones too)."
    ls.add_argument("--all", action="store_true", help="include expired silences")
    add_db_option(ls, settings)
    ls.set_defaults(handler=_list)


def register_expire(expire: argparse.ArgumentParser, settings: Settings) -> None:
    """``alerts expire``."""
    expire.description = "End a silence now; its alerts are announced again at the next look."
    expire.add_argument("id", metavar="ID", help="the silence id (a unique prefix is enough)")
    add_db_option(expire, settings)
    expire.set_defaults(handler=_expire)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _store(db: Path) -> SilenceStore:
    return SilenceStore(db.parent)


def _silence(args: argparse.Namespace) -> int:
    try:
        matchers = [Matcher.parse(m) for m in args.match]
        duration = args.duration
    except RoutingError as exc:
        raise ConfigError(str(exc)) from None
    now = utc_now()
    start = args.start or now
    try:
        silence = _store(args.db).add(
            matchers,
            starts_at=start,
            ends_at=start + duration,
            created_by=args.author,
            comment=args.comment,
            now=now,
        )
    except SilenceError as exc:
        raise ConfigError(str(exc)) from None
    print(silence.id)
    print(
        f"silenced {', '.join(str(m) for m in matchers)} until "
        f"{_local(silence.ends_at)} ({format_duration(duration)})",
        file=sys.stderr,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    now = utc_now()
    try:
        silences = _store(args.db).all()
    except SilenceError as exc:
        raise ConfigError(str(exc)) from None
    shown = [s for s in silences if args.all or s.state(now) != "expired"]
    if not shown:
        print("no silences" if args.all else "no active or pending silences (--all: expired)")
        return 0
    console = Console(highlight=False)
    Console(highlight=False, width=max(140, console.width)).print(silences_table(shown, now))
    return 0


def silences_table(silences: list[Silence], now: dt.datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "state", "starts", "ends", "left"):
        table.add_column(column, no_wrap=True)
    table.add_column("matchers", overflow="fold", min_width=26)
    for column in ("by", "comment"):
        table.add_column(column, overflow="fold")
    for s in silences:
        state = s.state(now)
        whole = dt.timedelta(seconds=int((s.ends_at - now).total_seconds()))
        left = format_duration(whole) if state != "expired" else "-"
        table.add_row(
            s.id,
            state,
            _local(s.starts_at),
            _local(s.ends_at),
            left,
            "\n".join(str(m) for m in s.matchers),
            s.created_by,
            s.comment,
        )
    return table


def _local(ts: dt.datetime) -> str:
    return ts.astimezone().strftime("%m-%d %H:%M")


def _expire(args: argparse.Namespace) -> int:
    try:
        silence = _store(args.db).expire(args.id, utc_now())
    except SilenceError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    print(f"expired {silence.id} ({' '.join(str(m) for m in silence.matchers)})")
    return 0
