"""Retirement: the runbook's steps, the evidence archive and its verification."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agentwatch.alerts.governance.archive import ARCHIVE_QUERIES, verify_archive
from agentwatch.alerts.governance.registry import Registry
from agentwatch.alerts.governance.retirement import (
    Retirement,
    RetirementError,
    post_revoke,
    retire,
)
from agentwatch.alerts.rules import Window, metrics
from agentwatch.cli import main
from agentwatch.frames import register
from agentwatch.processors.store.attach import connect as connect_lake
from tests.frames import at, events, store_batch
from tests.lifecycle_helpers import db_of, make_registry


class Revoked(BaseHTTPRequestHandler):
    """A stand-in IAM endpoint: records each revoke request, answers 204 (or 500)."""

    received: list[dict[str, Any]]
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({**json.loads(body), "auth": self.headers.get("Authorization")})
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def iam() -> Iterator[tuple[str, type[Revoked]]]:
    handler = type("Handler", (Revoked,), {"received": [], "status": 204})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/revoke", handler
    server.shutdown()
    server.server_close()


def claims_events() -> pl.DataFrame:
    return events(
        *(
            {"agent_id": "claims-1", "kind": "tool_call", "tool_name": "claims.create", "ts": at(i)}
            for i in range(5)
        ),
        {"agent_id": "faq-1", "kind": "tool_call", "tool_name": "kb.search", "ts": at(9)},
    )


def opened(agent_id: str, reason: str, actor: str) -> dict[str, Any]:
    return {"state": "open", "held": True, "by": actor}


def run(registry: Registry, tmp_path: Path, url: str | None, **kw: Any) -> Retirement:
    return retire(
        registry,
        kw.pop("agent", "claims-1"),
        reason=kw.pop("reason", "replaced by claims-2"),
        actor="ana",
        db=db_of(registry),
        archive_root=tmp_path / "archive",
        open_breaker=kw.pop("open_breaker", opened),
        revoke=None if url is None else post_revoke(url, "s3cret"),
        notifier=None,
    )


def test_retiring_runs_every_step_in_order_and_marks_the_entry_retired(
    tmp_path: Path, iam: tuple[str, type[Revoked]]
) -> None:
    url, handler = iam
    registry = make_registry(tmp_path, claims_events())
    done = run(registry, tmp_path, url)
    assert [s.action for s in done.steps] == [
        "open_breaker",
        "revoke_credential",
        "revoke_credential",
        "notify",
        "archive",
        "mark_retired",
    ]
    assert [r["credential"] for r in handler.received] == ["svc-claims-1", "vault:claims/api-key"]
    assert {r["auth"] for r in handler.received} == {"Bearer s3cret"}
    entry = registry.entry("claims-1")
    assert entry.status == "retired" and entry.retired_on is not None
    assert registry.revisions("claims-1")[-1].change == "retired"


def test_each_step_is_recorded_in_the_actions_table(tmp_path: Path, iam: Any) -> None:
    registry = make_registry(tmp_path, claims_events())
    run(registry, tmp_path, iam[0])
    actions = registry.store.read_log("actions").sort("step")
    assert actions["runbook"].unique().to_list() == ["retire-agent"]
    assert actions["actor"].unique().to_list() == ["person:ana"]
    assert actions["result"].to_list() == ["ok", "ok", "ok", "skipped", "ok", "ok"]


def test_the_archive_holds_only_the_agents_rows_and_verifies(tmp_path: Path, iam: Any) -> None:
    registry = make_registry(tmp_path, claims_events())
    archive = run(registry, tmp_path, iam[0]).archive
    assert {f.table for f in archive.manifest.files} == set(ARCHIVE_QUERIES)
    rows = {f.table: f.rows for f in archive.manifest.files}
    assert rows["events"] == 5 and rows["catalog_changes"] == 1
    assert pl.read_parquet(archive.path / "events.parquet")["agent_id"].unique().to_list() == [
        "claims-1"
    ]
    verdict = verify_archive(archive.path, archive.manifest_sha256)
    assert verdict.intact, verdict.problems


def test_a_failing_revoke_stops_the_retirement_and_is_recorded(
    tmp_path: Path, iam: tuple[str, type[Revoked]]
) -> None:
    url, handler = iam
    handler.status = 500
    registry = make_registry(tmp_path, claims_events())
    with pytest.raises(RetirementError, match=r"stopped at revoke_credential: .* answered 500"):
        run(registry, tmp_path, url)
    assert registry.entry("claims-1").status == "active"
    results = registry.store.read_log("actions").sort("step")["result"].to_list()
    assert results == ["ok", "failed"]


def test_an_agent_with_credentials_is_not_retired_without_a_revoke_webhook(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, claims_events())
    with pytest.raises(RetirementError, match="no revoke webhook is configured"):
        run(registry, tmp_path, None)
    assert registry.store.read_log("actions").height == 0


def test_an_agent_is_retired_only_once(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, claims_events())
    run(registry, tmp_path, None, agent="faq-1")
    with pytest.raises(RetirementError, match="already retired"):
        run(registry, tmp_path, None, agent="faq-1")


def test_events_after_the_retirement_count_as_a_retired_agent_active(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, claims_events())
    run(registry, tmp_path, None, agent="faq-1")
    retired_at = registry.history.filter(pl.col("change") == "retired")["ts"][0]
    late = events(
        {"agent_id": "faq-1", "kind": "tool_call", "tool_name": "kb.search", "ts": retired_at}
    )
    later = late.with_columns(pl.col("ts").dt.offset_by("1s"), pl.lit(7).alias("_offset"))
    store_batch(registry.store, later)
    con = connect_lake(db_of(registry))
    try:
        register(con, "agent_catalog", registry.file_catalog.frame())
        found = metrics()["retired_agent_events"].measure(
            con, Window(at(0), retired_at.replace(year=2100))
        )
    finally:
        con.close()
    # the event before the retirement (at 9 s) does not count; the one after does
    assert {s.labels["agent_id"]: s.value for s in found} == {"faq-1": 1.0}


# --------------------------------------------------------------------------- archive verify


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    registry = make_registry(tmp_path, claims_events())
    return run(registry, tmp_path, None, agent="faq-1").archive.path


def test_archive_verify_passes_an_untouched_archive(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "verify", str(archive)]) == 0
    assert "intact" in capsys.readouterr().out


def test_archive_verify_names_a_file_whose_bytes_changed(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pl.read_parquet(archive / "events.parquet")
    frame.with_columns(pl.lit("someone-else").alias("agent_id")).write_parquet(
        archive / "events.parquet"
    )
    assert main(["archive", "verify", str(archive)]) == 1
    assert "events.parquet: SHA-256" in capsys.readouterr().err


def test_archive_verify_names_missing_and_unlisted_files(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (archive / "alert_events.parquet").unlink()
    (archive / "extra.parquet").write_bytes(b"")
    assert main(["archive", "verify", str(archive)]) == 1
    err = capsys.readouterr().err
    assert "alert_events.parquet: missing" in err and "extra.parquet: not listed" in err


def test_archive_verify_catches_a_rewritten_manifest_given_its_recorded_digest(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((archive / "manifest.json").read_text())
    recorded = hashlib.sha256((archive / "manifest.json").read_bytes()).hexdigest()
    manifest["reason"] = "nothing to see"
    (archive / "manifest.json").write_text(json.dumps(manifest))
    assert main(["archive", "verify", str(archive), "--manifest-sha256", recorded]) == 1
    assert "digest differs" in capsys.readouterr().err


def test_archive_verify_of_a_folder_without_a_manifest_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "verify", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
