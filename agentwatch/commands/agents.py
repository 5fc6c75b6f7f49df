"""The ``agents`` command: the agent registry, its history, access reviews and retirement."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Final

from agentwatch.alerts.governance.catalog import TOOL_TIERS, entry_doc
from agentwatch.alerts.governance.registry import diff_entries
from agentwatch.alerts.governance.releases import Releases
from agentwatch.alerts.governance.review import record_review, run_review
from agentwatch.clock import utc_now
from agentwatch.commands import agents_retire
from agentwatch.commands.registry_options import (
    cell,
    format_parent,
    open_registry,
    print_json,
    registry_parent,
    show,
    table,
)
from agentwatch.durations import duration_argument, format_duration
from agentwatch.settings import ConfigError, Settings

REVIEW_WINDOW: Final = dt.timedelta(days=30)
"""The event time an access review covers unless told: about a month of use."""


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "The agent registry: the catalog file plus the recorded history of every "
        "entry. Each command first records what changed in the catalog file since "
        "the last load (who, when, the diff) in the catalog_changes table."
    )
    actions = parser.add_subparsers(dest="agents_action", metavar="ACTION", required=True)
    common = registry_parent(settings)
    tabular = format_parent("table", "json")

    p = actions.add_parser("list", parents=[common, tabular], help="every agent, one line each")
    p.set_defaults(handler=_cmd_list)

    p = actions.add_parser("show", parents=[common, tabular], help="one agent's entry in full")
    p.add_argument("agent", metavar="AGENT")
    p.set_defaults(handler=_cmd_show)

    p = actions.add_parser(
        "history", parents=[common, tabular], help="every recorded change of an agent's entry"
    )
    p.add_argument("agent", metavar="AGENT")
    p.set_defaults(handler=_cmd_history)

    p = actions.add_parser(
        "diff",
        parents=[common, tabular],
        help="field by field, how two recorded revisions of an entry differ",
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument(
        "--from", dest="rev_from", type=int, metavar="N", help="older revision (default: previous)"
    )
    p.add_argument("--to", dest="rev_to", type=int, metavar="N", help="newer (default: latest)")
    p.set_defaults(handler=_cmd_diff)

    p = actions.add_parser(
        "review",
        parents=[common, format_parent("table", "json", "html")],
        help="access review: unused and unapproved models and tools, writes, escalations",
        description=(
            "Per agent, over the window: approved models and tools never used (candidates "
            "to revoke), used but not approved, calls of write and destructive tools and how "
            "many had a human approval (attributes.approved_by), escalation paths taken."
        ),
    )
    p.add_argument("agents", metavar="AGENT", nargs="*", help="only these (default: all)")
    p.add_argument(
        "--since",
        type=duration_argument,
        default=REVIEW_WINDOW,
        metavar="DURATION",
        help=f"window of event time up to now (default {format_duration(REVIEW_WINDOW)})",
    )
    p.add_argument("--out", type=Path, help="write the output here (html: required)")
    p.add_argument(
        "--record",
        action="store_true",
        help="record the review in access_reviews (resets AccessReviewOverdue)",
    )
    p.set_defaults(handler=_cmd_review)

    agents_retire.add_parser(actions, common, settings)


def _cmd_list(args: argparse.Namespace) -> int:
    registry = open_registry(args, reading=True)
    entries = sorted(registry.catalog, key=lambda e: e.agent_id)
    if args.format == "json":
        print_json([entry_doc(e) for e in entries])
        return 0
    t = table(
        f"{len(entries)} agents ({registry.catalog.source})",
        ["agent", "status", "risk", "owner", "autonomy", "tools r/w/d"],
    )
    for e in entries:
        tools = sorted(e.approved_tools or ())
        counts = "/".join(str(sum(e.tool_tier(x) == tier for x in tools)) for tier in TOOL_TIERS)
        t.add_row(e.agent_id, e.status, e.risk_tier, e.owner, cell(e.autonomy), counts)
    show(t)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    registry = open_registry(args, reading=True)
    entry = registry.entry(args.agent)
    releases = [r.to_json() for r in Releases(registry).all(args.agent)]
    doc = entry_doc(entry)
    if args.format == "json":
        print_json({"entry": doc, "releases": releases})
        return 0
    t = table(f"{entry.agent_id}", ["field", "value"])
    for key, value in doc.items():
        if key == "approved_tools" and value is not None:
            value = [f"{x} ({entry.tool_tier(x)})" for x in value]
        t.add_row(key, cell(value))
    for r in releases:
        approvals = ", ".join(a["by"] for a in r["approvals"]) or "none"
        t.add_row(f"release {r['version']}", f"stage {cell(r['stage'])}, approved by {approvals}")
    show(t)
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    registry = open_registry(args, reading=True)
    revisions = registry.revisions(args.agent)
    if args.format == "json":
        print_json(
            [
                {
                    "revision": r.number,
                    "ts": r.ts.isoformat(),
                    "change": r.change,
                    "actor": r.actor,
                    "reason": r.reason,
                    "source": r.source,
                    "diff": [vars(d) for d in r.diff],
                }
                for r in revisions
            ]
        )
        return 0
    t = table(f"history of {args.agent}", ["#", "when (UTC)", "change", "by", "fields", "why"])
    for r in revisions:
        fields = ", ".join(d.field for d in r.diff) if r.change != "added" else "(new entry)"
        t.add_row(str(r.number), f"{r.ts:%Y-%m-%d %H:%M:%S}", r.change, r.actor, fields, r.reason)
    show(t)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    registry = open_registry(args, reading=True)
    revisions = registry.revisions(args.agent)
    if not revisions:
        raise ConfigError(f"agent {args.agent} has no recorded revisions yet")
    numbers = [r.number for r in revisions]
    to = args.rev_to if args.rev_to is not None else numbers[-1]
    start = args.rev_from if args.rev_from is not None else to - 1
    for n in (start, to):
        if n not in numbers and not (n == 0 and args.rev_from is None):
            raise ConfigError(
                f"agent {args.agent} has no revision {n} (revisions 1 to {numbers[-1]})"
            )
    before = revisions[start - 1].entry if start >= 1 else None
    after = revisions[to - 1].entry
    changes = diff_entries(before, after)
    if args.format == "json":
        print_json({"from": start, "to": to, "diff": [vars(c) for c in changes]})
        return 0
    t = table(f"{args.agent}: revision {start} -> {to}", ["field", "before", "after"])
    for c in changes:
        t.add_row(c.field, cell(c.before), cell(c.after))
    show(t)
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    registry = open_registry(args, reading=True)
    end = utc_now()
    review = run_review(registry, args.db, end - args.since, end, args.agents)
    if args.record:
        record_review(registry, review, f"person:{args.by}", end)
    if args.format == "html":
        from agentwatch.alerts.governance.review_report import write_html

        if args.out is None:
            raise ConfigError("--format html writes a file: give it with --out FILE")
        write_html(review, args.out)
        print(f"access review of {len(review.agents)} agents written to {args.out}")
        return 0
    if args.format == "json":
        print_json(review.to_json())
        return 0
    t = table(
        f"access review, {review.start:%Y-%m-%d %H:%M} to {review.end:%Y-%m-%d %H:%M} UTC",
        ["agent", "risk", "unused m/t", "unapproved m/t", "write ok/all", "destr. ok/all", "esc."],
    )
    for a in review.agents:
        t.add_row(
            a.agent_id,
            a.risk_tier,
            f"{len(a.unused_models)}/{len(a.unused_tools)}",
            f"{len(a.unapproved_models)}/{len(a.unapproved_tools)}",
            f"{a.tiers['write'].human_approved}/{a.tiers['write'].calls}",
            f"{a.tiers['destructive'].human_approved}/{a.tiers['destructive'].calls}",
            str(sum(e.count for e in a.escalations)),
        )
    show(t)
    return 0
