"""The ``releases`` command: register, approve, stage and list agent releases."""

from __future__ import annotations

import argparse
from pathlib import Path

from agentwatch.alerts.governance.releases import STAGES, Release, Releases, read_evaluation
from agentwatch.commands.options import given
from agentwatch.commands.registry_options import (
    cell,
    format_parent,
    open_registry,
    print_json,
    registry_parent,
    show,
    table,
)
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "A release is a version of an agent (the agent_version its events carry) with "
        "its prompt versions, models, tools and an evaluation result. Once an agent has "
        "a registered release, prod traffic of any other version raises "
        "UnregisteredReleaseInProd; a high-risk agent's release needs an approval "
        "before it may run in prod; calls outside a release's models and tools raise "
        "OffReleaseCall."
    )
    actions = parser.add_subparsers(dest="releases_action", metavar="ACTION", required=True)
    common = registry_parent(settings)
    tabular = format_parent("table", "json")

    p = actions.add_parser("register", parents=[common, tabular], help="record a new release")
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("version", metavar="VERSION", help="the agent_version its events carry")
    p.add_argument(
        "--prompt-version",
        action="append",
        type=given,
        default=[],
        metavar="V",
        help="repeatable",
    )
    p.add_argument(
        "--model",
        action="append",
        type=given,
        default=[],
        metavar="NAME",
        help="repeatable; at least one",
    )
    p.add_argument(
        "--tool", action="append", type=given, default=[], metavar="NAME", help="repeatable"
    )
    p.add_argument(
        "--eval", dest="eval_file", type=Path, required=True, metavar="FILE",
        help="the evaluation result file (its SHA-256 is recorded)",
    )  # fmt: skip
    p.add_argument(
        "--score", type=float, help="the evaluation score (default: the file's top-level score)"
    )
    p.add_argument("--note", default="", help="free text recorded with the release")
    p.set_defaults(handler=_cmd_register)

    p = actions.add_parser("approve", parents=[common, tabular], help="approve a release")
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--note", default="", help="recorded with the approval")
    p.set_defaults(handler=_cmd_approve)

    p = actions.add_parser(
        "stage", parents=[common, tabular], help="record a rollout stage: canary share or full"
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--share", type=float, help="canary share of traffic, between 0 and 1")
    p.set_defaults(handler=_cmd_stage)

    p = actions.add_parser("list", parents=[common, tabular], help="registered releases")
    p.add_argument("agent", metavar="AGENT", nargs="?", help="only this agent's")
    p.set_defaults(handler=_cmd_list)


def _print(releases: list[Release], fmt: str, title: str) -> None:
    if fmt == "json":
        print_json([r.to_json() for r in releases])
        return
    t = table(title, ["agent", "version", "models", "score", "approved by", "stage"])
    for r in releases:
        approvals = ", ".join(a.by for a in r.approvals)
        if not approvals:
            approvals = "needed" if r.needs_approval else "-"
        stage = r.stage if r.stage != "canary" else f"canary {r.canary_share:.0%}"
        score = "-" if r.eval_score is None else f"{r.eval_score:g}"
        t.add_row(r.agent_id, r.version, cell(r.models), score, approvals, cell(stage))
    show(t)


def _cmd_register(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    registry.entry(args.agent)
    evaluation = read_evaluation(args.eval_file, args.score)
    release = Releases(registry).register(
        args.agent,
        args.version,
        actor=f"person:{args.by}",
        prompt_versions=args.prompt_version,
        models=args.model,
        tools=args.tool,
        evaluation=evaluation,
        note=args.note,
    )
    _print([release], args.format, "registered")
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    release = Releases(open_registry(args)).approve(
        args.agent, args.version, actor=f"person:{args.by}", note=args.note
    )
    _print([release], args.format, "approved")
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    release = Releases(open_registry(args)).stage(
        args.agent, args.version, args.stage, actor=f"person:{args.by}", share=args.share
    )
    _print([release], args.format, "staged")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    registry = open_registry(args, reading=True)
    if args.agent:
        registry.entry(args.agent)
    releases = Releases(registry).all(args.agent)
    _print(releases, args.format, f"{len(releases)} releases")
    return 0
