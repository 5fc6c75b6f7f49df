"""The ``agentwatch alerts`` command group, shared by the modules that add subcommands.

Several command modules (the evaluator's ``run``, the notifier's ``silence``,
``export-prometheus``, ``receive``, ...) hang their subcommands under one ``alerts``
parser. Each calls :func:`alerts_subparsers` from its ``register``; the first call
creates the group and later calls reuse it, so the order of ``COMMAND_MODULES`` does
not matter. The shared options keep ``--db``, ``--catalog`` and ``--rules`` spelled and
defaulted the same way in every subcommand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, Catalog, load_catalog
from agentwatch.alerts.rules import DEFAULT_RULES_DIR
from agentwatch.settings import Settings

GROUP: Final = "alerts"


def alerts_subparsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subparsers of ``agentwatch alerts``, created on first use and reused after."""
    parser = sub.choices.get(GROUP)
    if parser is None:
        parser = sub.add_parser(
            GROUP,
            help="alert rules, notifications and the agent catalog",
            description=(
                "Evaluate alert rules over the landed events and the agent catalog, and "
                "manage what happens to the alerts. See docs/alerts.md."
            ),
        )
        return parser.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND", required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"the `{GROUP}` parser exists without subcommands")


def add_catalog_option(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--catalog``: the agent catalog (``[alerts] catalog``); none unless one is named.

    The shipped example is the demo's fleet: loading it by default would hold open, and
    escalate about, agents a deployment never had.
    """
    configured = settings.get("alerts", "catalog", "")
    parser.add_argument(
        "--catalog",
        type=Path,
        default=Path(configured) if configured else None,
        help="agent catalog YAML: owners, thresholds, approved models and tools, retired "
        "agents (env AGENTWATCH_ALERTS_CATALOG; default: none, so no agent is governed or "
        f"held; the demo's example is {EXAMPLE_CATALOG})",
    )


def catalog_from_args(args: argparse.Namespace, without: str) -> Catalog:
    """The ``--catalog`` named, or an empty one after saying what ``without`` it won't do."""
    if args.catalog is None:
        print(f"agentwatch: no agent catalog (--catalog): {without}", file=sys.stderr)
    return load_catalog(args.catalog)


def add_rules_option(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--rules``: a directory of rule files (``[alerts] rules``; the shipped set by default)."""
    parser.add_argument(
        "--rules",
        type=Path,
        default=Path(settings.get("alerts", "rules", str(DEFAULT_RULES_DIR))),
        help="directory of alert rule YAML files, *.yaml (default %(default)s)",
    )
