"""Options the ``agentwatch alerts`` subcommands share.

The subcommands themselves are listed in :data:`agentwatch.cli.ALERTS`. The shared
options keep ``--catalog``, ``--rules`` and the response options spelled and defaulted
the same way in every subcommand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, Catalog, load_catalog
from agentwatch.alerts.notify.config import add_notify_config_argument
from agentwatch.alerts.rules import DEFAULT_RULES_DIR
from agentwatch.commands.options import (
    add_bootstrap_option,
    add_control_topic_option,
    control_keyring,
)
from agentwatch.settings import Settings

if TYPE_CHECKING:
    from agentwatch.alerts.response.respond import Response


def add_catalog_option(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--catalog``: the agent catalog (``[alerts] catalog``); none unless one is named.

    The shipped example is the demo's fleet: loading it by default would hold open, and
    escalate about, agents a deployment never had.
    """
    configured = settings.value("alerts", "catalog")
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
        default=Path(settings.value("alerts", "rules") or DEFAULT_RULES_DIR),
        help="directory of alert rule YAML files, *.yaml (default %(default)s)",
    )


def add_runbook_dir_option(
    parser: argparse.ArgumentParser, settings: Settings, *names: str
) -> None:
    """The runbook directory (``[alerts] runbooks``; the shipped runbooks by default)."""
    from agentwatch.alerts.response.runbook_files import RUNBOOK_DIR

    parser.add_argument(
        *(names or ("--runbook-dir",)),
        dest="runbook_dir",
        type=Path,
        metavar="DIR",
        default=Path(settings.value("alerts", "runbooks") or RUNBOOK_DIR),
        help="directory of runbook YAML files a rule's runbook_url: runbooks/<id>.yaml "
        "names (env AGENTWATCH_ALERTS_RUNBOOKS; default %(default)s)",
    )


def add_response_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """What a firing alert is handed to: the notifier, runbooks and breaker supervision."""
    add_notify_config_argument(parser, settings)
    add_runbook_dir_option(parser, settings)
    add_bootstrap_option(parser, settings, "Kafka for the control topic runbooks open breakers on")
    add_control_topic_option(parser, settings)
    parser.add_argument(
        "--no-response",
        action="store_true",
        help="only evaluate and record: no notifications, runbooks or breaker supervision",
    )


def response_from_args(args: argparse.Namespace, catalog: Catalog | None = None) -> Response | None:
    """The response ``args`` ask for, over ``catalog`` (else the one ``--catalog`` names)."""
    from agentwatch.alerts.response.respond import NO_CATALOG_RESPONSE, build_response

    if args.no_response:
        return None
    keyring = control_keyring(args)  # runbooks and supervision sign what they publish
    if catalog is None:
        catalog = catalog_from_args(args, NO_CATALOG_RESPONSE)
    return build_response(
        args.db,
        args.notify_config,
        args.bootstrap,
        args.control_topic,
        keyring,
        catalog,
        args.runbook_dir,
    )
