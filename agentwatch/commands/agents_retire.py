"""``agents retire``: runs the retirement runbook (alerts/governance/retirement.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from agentwatch.alerts.governance.retirement import (
    RetirementError,
    immediate,
    post_revoke,
    retire,
)
from agentwatch.alerts.notify.config import add_notify_config_argument, load_notify_config
from agentwatch.alerts.notify.notifier import Notifier, StoreLog, catalog_contacts
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.response.control import BreakerControl, retired_agents
from agentwatch.commands.options import (
    add_bootstrap_option,
    add_control_topic_option,
    control_keyring,
)
from agentwatch.commands.registry_options import open_registry, show, table
from agentwatch.settings import Settings

TOKEN_ENV = "AGENTWATCH_LIFECYCLE_REVOKE_TOKEN"


def add_parser(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    settings: Settings,
) -> None:
    p = actions.add_parser(
        "retire",
        parents=[common],
        help="retire an agent: breaker held open, credentials revoked, evidence archived",
        description=(
            "Runs the retirement runbook: the agent's breaker is opened and held, each "
            "credential the catalog lists is revoked through the revoke webhook, the owner "
            "and users are notified, the agent's records are archived as Parquet with a "
            "SHA-256 manifest, and the registry entry is marked retired with the date. "
            "Every step is recorded in the actions table."
        ),
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("--reason", required=True, help="why: recorded with every step")
    add_bootstrap_option(p, settings, "Kafka for the control topic the breaker is held on")
    add_control_topic_option(p, settings)
    add_notify_config_argument(p, settings)
    p.add_argument(
        "--revoke-webhook",
        metavar="URL",
        default=settings.value("lifecycle", "revoke_webhook") or None,
        help="POSTed once per credential to revoke ([lifecycle] revoke_webhook; bearer token "
        f"from ${TOKEN_ENV}); required when the agent lists credentials",
    )
    p.add_argument(
        "--archive-dir",
        type=Path,
        default=settings.value("lifecycle", "archive_dir") or None,
        help="where evidence archives go ([lifecycle] archive_dir; default: archive/ beside --db)",
    )
    p.set_defaults(handler=_cmd_retire)


def _cmd_retire(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    entry = registry.entry(args.agent)  # unknown agents stop here, before any step
    data_dir: Path = args.db.parent
    catalog = registry.catalog
    notifier = Notifier(
        immediate(load_notify_config(args.notify_config, data_dir)),
        log_sink=StoreLog(registry.store),
        silences=SilenceStore(data_dir),
        contact_lookup=catalog_contacts(catalog),
    )
    control: list[BreakerControl] = []
    keyring = control_keyring(args)  # the hold is signed like every control record

    def open_breaker(agent_id: str, reason: str, actor: str) -> dict[str, Any]:
        retired = sorted({*retired_agents(catalog), agent_id})
        c = BreakerControl.connect(
            args.bootstrap, args.control_topic, keyring=keyring, retired=retired
        )
        control.append(c)
        transition = c.open(agent_id, reason=reason, actor=actor)
        published = transition.published
        return {
            "state": transition.breaker.state,
            "held": transition.breaker.held,
            "control_id": None if published is None else published.message.id,
        }

    revoke = None
    if args.revoke_webhook:
        revoke = post_revoke(args.revoke_webhook, os.environ.get(TOKEN_ENV))
    try:
        done = retire(
            registry,
            entry.agent_id,
            reason=args.reason,
            actor=args.by,
            db=args.db,
            archive_root=args.archive_dir or data_dir / "archive",
            open_breaker=open_breaker,
            revoke=revoke,
            notifier=notifier,
        )
    except RetirementError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    finally:
        for c in control:
            c.disconnect()
    t = table(f"{entry.agent_id} retired", ["step", "result", "detail"])
    for s in done.steps:
        detail = ", ".join(f"{k}={v}" for k, v in s.detail.items() if k != "files")
        t.add_row(s.action, s.result, detail)
    show(t)
    print(f"evidence archive: {done.archive.path} (verify: agentwatch archive verify PATH)")
    return 0
