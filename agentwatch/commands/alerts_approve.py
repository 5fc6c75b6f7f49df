"""``agentwatch alerts approve``: approve a waiting runbook step and go on with the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwatch.commands.alerts_group import (
    add_catalog_option,
    add_runbook_dir_option,
    catalog_from_args,
)
from agentwatch.commands.options import (
    add_bootstrap_option,
    add_control_topic_option,
    control_keyring,
)
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Record NAME's approval of the waiting step ACTION_ID (shown in the actions "
        "table and the runbook log) in the actions table, then run the rest of the "
        "runbook: breaker, rollback and throttle steps publish to the control topic."
    )
    p = parser
    p.add_argument("action_id", metavar="ACTION_ID")
    p.add_argument("--by", required=True, metavar="NAME", help="who approves")
    p.add_argument(
        "--db",
        type=Path,
        default=Path(settings.value("storage", "db")),
        help="the store; the actions table lives in it (default %(default)s)",
    )
    add_bootstrap_option(p, settings)
    add_control_topic_option(p, settings)
    add_catalog_option(p, settings)
    add_runbook_dir_option(p, settings, "--runbook-dir", "--runbooks")
    p.set_defaults(handler=_cmd_approve)


def _cmd_approve(args: argparse.Namespace) -> int:
    from agentwatch.alerts.response.control import BreakerControl
    from agentwatch.alerts.response.runbook_files import RunbookError, load_runbooks
    from agentwatch.alerts.response.runbooks import RunbookContext, approve, catalog_pins, resume
    from agentwatch.processors.store.lake import LakeStore

    keyring = control_keyring(args)
    catalog = catalog_from_args(args, "no pinned versions to roll back to")
    store = LakeStore(args.db)
    try:
        waiting = approve(store, args.action_id, args.by)
    except RunbookError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    print(f"approved {args.action_id} ({waiting['runbook']} step {waiting['step']}) by {args.by}")
    try:
        context = RunbookContext(
            store=store,
            connect_control=lambda: BreakerControl.connect(
                args.bootstrap, args.control_topic, keyring=keyring
            ),
            pinned_versions=catalog_pins(catalog),
        )
        rows = resume(waiting, context, load_runbooks(args.runbook_dir))
    except RunbookError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    finally:
        if context.control is not None:
            context.control.disconnect()
    for row in rows:
        print(f"  step {row['step']} {row['action']}: {row['result']} {row['detail']}")
    return 0 if all(r["result"] != "failed" for r in rows) else 1
