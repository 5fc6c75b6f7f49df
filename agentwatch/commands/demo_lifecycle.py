"""The demo's agent lifecycle: register a release, watch it, review access, retire, verify.

Before the fleet starts, the catalog is recorded in the registry and the release the
first simulated agent runs is registered (its models and tools, an evaluation file) and
approved. After the live part the traffic is checked against it, the agent's access is
reviewed (terminal table and an HTML page), and the agent is retired through the
runbook (breaker held open on the control topic, owner notified, evidence archived)
and its archive verified.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from agentwatch.alerts.governance.archive import verify_archive
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG
from agentwatch.alerts.governance.registry import load_registry
from agentwatch.alerts.governance.releases import Releases, read_evaluation
from agentwatch.alerts.governance.retirement import immediate, retire
from agentwatch.alerts.governance.review import record_review, run_review
from agentwatch.alerts.governance.review_report import write_html
from agentwatch.alerts.notify.config import load_notify_config, shipped_config_path
from agentwatch.alerts.notify.notifier import Notifier, StoreLog, catalog_contacts
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.response.control import BreakerControl
from agentwatch.alerts.rules import Window, metrics
from agentwatch.clock import utc_now
from agentwatch.frames import register
from agentwatch.ingest.contract.control import Keyring
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.terminal import Table, literal

ACTOR = "demo"
SIGNALS = ("unregistered_release_events", "unapproved_release_events", "off_release_calls")


@dataclass(frozen=True)
class Registered:
    agent_id: str
    version: str
    since: dt.datetime


def register_release(console: Console, db: Path, agents: int, seed: int) -> Registered:
    """Record the catalog, then register and approve the release agent one runs."""
    sim = make_agents(agents, seed)[0]
    registry = load_registry(db, EXAMPLE_CATALOG, actor=f"person:{ACTOR}")
    params = sim.parameters
    evaluation = db.parent / f"eval-{sim.agent_id}-{params.agent_version}.json"
    evaluation.write_text(json.dumps({"suite": "demo-regression", "cases": 120, "score": 0.93}))
    releases = Releases(registry)
    if not any(r.version == params.agent_version for r in releases.all(sim.agent_id)):
        releases.register(
            sim.agent_id, params.agent_version, actor=f"person:{ACTOR}",
            prompt_versions=[params.prompt_version],
            models=[m.name for m in params.models.items], tools=sorted(params.tools),
            evaluation=read_evaluation(evaluation, None),
        )  # fmt: skip
        releases.approve(sim.agent_id, params.agent_version, actor="person:release-manager")
    release = releases.get(sim.agent_id, params.agent_version)
    console.print(
        f"[bold]Release[/] {literal(release.version)} of {literal(sim.agent_id)} registered: "
        f"{len(release.models)} models, {len(release.tool_tiers)} tools, evaluation score "
        f"{release.eval_score:g}, approved by "
        + literal(", ".join(a.by for a in release.approvals))
    )
    return Registered(sim.agent_id, params.agent_version, utc_now())


def finish(console: Console, db: Path, bootstrap: str, registered: Registered, keys: Path) -> None:
    """Watch, review, retire and verify, printing each step."""
    registry = load_registry(db, EXAMPLE_CATALOG, actor=f"person:{ACTOR}")
    agent = registered.agent_id
    now = utc_now()
    console.rule(f"[bold]Lifecycle: {agent}")
    con = connect_lake(db)
    try:
        register(con, "agent_catalog", registry.catalog.frame())
        window = Window(registered.since, now)
        found = {name: metrics()[name].measure(con, window) for name in SIGNALS}
        row = con.execute(
            "SELECT count(*) FROM events WHERE agent_id = ? AND agent_version = ? AND ts >= ?",
            [agent, registered.version, registered.since],
        ).fetchone()
    finally:
        con.close()
    mine = {
        n: sum(s.value or 0 for s in v if s.labels.get("agent_id") == agent)
        for n, v in found.items()
    }
    console.print(
        f"Watched: {row[0] if row else 0:,} events of release {registered.version}; "
        + ", ".join(f"{n.replace('_', ' ')}: {v:g}" for n, v in mine.items())
    )
    review = run_review(registry, db, registered.since, now, [agent])
    record_review(registry, review, f"person:{ACTOR}", now)
    page = db.parent / "access-review.html"
    write_html(review, page)
    a = review.agents[0]
    title = f"Access review of {agent} ({page})"
    table = Table("approved, unused", "used, unapproved", "write calls (human-approved)",
                  "escalations", title=title, title_justify="left")  # fmt: skip
    table.add_row(
        ", ".join(a.unused_models + a.unused_tools) or "-",
        ", ".join(a.unapproved_models + a.unapproved_tools) or "-",
        f"{a.tiers['write'].calls} ({a.tiers['write'].human_approved})",
        str(sum(e.count for e in a.escalations)),
    )
    console.print(table)
    if any(r.change == "retired" for r in registry.revisions(agent)):
        console.print(f"{agent} was retired by an earlier run (`make clean` starts over).")
        return
    done = _retire(registry, db, bootstrap, agent, keys)
    verdict = verify_archive(done["path"], done["manifest_sha256"])
    files = verdict.manifest.files if verdict.manifest else ()
    console.print(
        f"Retired {literal(agent)}: breaker held open, owner notified, registry entry retired "
        f"on {registry.entry(agent).retired_on}; evidence archive {literal(done['path'])} "
        f"({sum(f.rows for f in files):,} rows in {len(files)} files): "
        + (
            "[green]verified intact[/]"
            if verdict.intact
            else f"[red]{literal(verdict.problems)}[/]"
        )
    )
    console.print(f"Its history: agentwatch agents history {agent} --db {db} --catalog "
                  f"{EXAMPLE_CATALOG}")  # fmt: skip


def _retire(registry: Any, db: Path, bootstrap: str, agent: str, keys: Path) -> dict[str, Any]:
    notifier = Notifier(
        immediate(load_notify_config(shipped_config_path(), db.parent)),
        log_sink=StoreLog(registry.store),
        silences=SilenceStore(db.parent),
        contact_lookup=catalog_contacts(registry.catalog),
    )
    controls: list[BreakerControl] = []

    def open_breaker(agent_id: str, reason: str, actor: str) -> dict[str, Any]:
        control = BreakerControl.connect(
            bootstrap, keyring=Keyring.from_file(keys), retired=[agent_id]
        )
        controls.append(control)
        transition = control.open(agent_id, reason=reason, actor=actor)
        return {"state": transition.breaker.state}

    try:
        result = retire(
            registry, agent, reason="replaced by the next generation of the HR assistant",
            actor=ACTOR, db=db, archive_root=db.parent / "archive",
            open_breaker=open_breaker, revoke=None, notifier=notifier,
        )  # fmt: skip
    finally:
        for control in controls:
            control.disconnect()
    return {"path": result.archive.path, "manifest_sha256": result.archive.manifest_sha256}
