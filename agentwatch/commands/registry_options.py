"""Options and output helpers shared by the lifecycle commands (agents, releases, archive)."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG
from agentwatch.alerts.governance.registry import Registry, load_registry
from agentwatch.commands.options import add_db_option
from agentwatch.settings import ConfigError, Settings
from agentwatch.terminal import Table

TABLE_WIDTH = 100  # tables are laid out for a terminal this wide at most


def login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def registry_parent(settings: Settings) -> argparse.ArgumentParser:
    """``--db``, ``--catalog`` and ``--by``: where the registry lives and who acts."""
    parent = argparse.ArgumentParser(add_help=False)
    add_db_option(parent, settings, "the store; the registry's history lives in it")
    configured = settings.value("alerts", "catalog")
    parent.add_argument(
        "--catalog",
        type=Path,
        default=Path(configured) if configured else None,
        help="the agent catalog file; each load records its changes in the registry "
        f"([alerts] catalog, env AGENTWATCH_ALERTS_CATALOG; required; the demo's is "
        f"{EXAMPLE_CATALOG})",
    )
    parent.add_argument(
        "--by", default=login(), metavar="NAME", help="who acts (default: the login, %(default)s)"
    )
    return parent


def format_parent(*choices: str) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--format", choices=list(choices), default=choices[0], help="output (default %(default)s)"
    )
    return parent


def open_registry(args: argparse.Namespace, *, reading: bool = False) -> Registry:
    """The registry, after recording what changed in the catalog file since the last load.

    A command that only reads it (``reading``) refuses a store that does not exist rather
    than create an empty one where ``--db`` has a typo; one that records a change may
    start the store (registering agents before the first event lands).
    """
    if reading:
        from agentwatch.processors.store.attach import require_lake
        from agentwatch.processors.store.location import locate

        require_lake(locate(args.db))
    if args.catalog is None:
        raise ConfigError(
            "no agent catalog: the registry is the catalog file plus its history; give "
            "--catalog FILE ([alerts] catalog, AGENTWATCH_ALERTS_CATALOG)"
        )
    return load_registry(args.db, args.catalog, actor=f"person:{args.by}")


def table(title: str, columns: list[str]) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    return t


def show(renderable: Any) -> None:
    Console(width=TABLE_WIDTH).print(renderable)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def cell(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
