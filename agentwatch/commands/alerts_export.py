"""``agentwatch alerts export-prometheus``: the alert rules as Prometheus alerting rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwatch.commands.alerts_group import (
    add_catalog_option,
    add_rules_option,
    catalog_from_args,
)
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Write Prometheus alerting rules equivalent to the agentwatch rules, over the "
        "metrics that `agentwatch process` exports, so an existing Prometheus and "
        "Alertmanager can alert on them. Per-agent thresholds and governance lists are "
        "read from the catalog now: export again when it changes. Rules without an "
        "equivalent are listed at the top of the file. Check the result with "
        "`promtool check rules FILE`."
    )
    p = parser
    add_rules_option(p, settings)
    add_catalog_option(p, settings)
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where to write the rules (default: standard output)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from agentwatch.alerts.alertmanager.export import export_rules
    from agentwatch.alerts.rules import load_rules

    rules = load_rules(args.rules)
    catalog = catalog_from_args(args, "rules with catalog thresholds are skipped")
    export = export_rules(rules, catalog)
    text = export.render(f"rules: {args.rules}; catalog: {args.catalog}")
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
        count = sum(len(r) for r in export.groups.values())
        print(f"wrote {count} Prometheus rule(s) to {args.out}", file=sys.stderr)
    for name, why in export.skipped:
        print(f"left out {name}: {why}", file=sys.stderr)
    return 0
