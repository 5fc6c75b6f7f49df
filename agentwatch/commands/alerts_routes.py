"""``agentwatch alerts routes``: check the notification config and show where alerts go.

Why: a routing mistake is found when an alert reaches nobody, which is the worst time.
This checks the config as the notifier would read it and, given labels, names the
receivers and groups an alert with those labels would reach (as ``amtool config routes
test`` does for Alertmanager), catalog contacts included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from agentwatch.alerts.notify.config import add_notify_config_argument, load_notify_config
from agentwatch.alerts.notify.notifier import catalog_contacts
from agentwatch.alerts.notify.routing import Route, Router
from agentwatch.commands.alerts_group import add_catalog_option, catalog_from_args
from agentwatch.durations import format_duration
from agentwatch.settings import ConfigError, Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Read the notification config as the notifier does (exit 2 on a problem) and "
        "print its route tree; with LABEL=VALUE arguments, print the receivers and "
        "groups that an alert with those labels would reach, using the catalog's "
        "owner and on-call for routes with receiver_from."
    )
    p = parser
    p.add_argument("labels", nargs="*", metavar="LABEL=VALUE", help="the alert's labels")
    add_notify_config_argument(p, settings)
    add_catalog_option(p, settings)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for item in args.labels:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"expected LABEL=VALUE, got {item!r}")
        labels[name] = value
    # File receivers resolve relative paths under a data dir; none is written here.
    with tempfile.TemporaryDirectory() as scratch:
        config = load_notify_config(args.notify_config, Path(scratch))
    router = Router(
        config.route,
        list(config.receivers),
        catalog_contacts(catalog_from_args(args, "no owner routes")),
    )
    if not labels:
        print(f"{args.notify_config}: ok, {len(config.receivers)} receiver(s)")
        _print_tree(config.route, 0)
        return 0
    for target in router.targets(labels):
        print(
            f"{target.receiver}\tgroup {target.group_key(labels)}\t"
            f"wait {format_duration(target.group_wait)}, "
            f"interval {format_duration(target.group_interval)}, "
            f"repeat {format_duration(target.repeat_interval)}"
        )
    return 0


def _print_tree(route: Route, depth: int) -> None:
    matchers = ", ".join(str(m) for m in route.matchers) or "(everything)"
    receiver = route.receiver or "(inherited)"
    if route.receiver_from:
        receiver = f"{route.receiver_from} from the catalog, else {receiver}"
    flags = " continue" if route.continue_ else ""
    sys.stdout.write(f"{'  ' * depth}- {matchers} -> {receiver}{flags}\n")
    for child in route.routes:
        _print_tree(child, depth + 1)
