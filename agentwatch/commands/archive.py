"""The ``archive`` command: check an evidence archive against its manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwatch.alerts.governance.archive import manifest_json, verify_archive
from agentwatch.commands.registry_options import print_json
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = "Evidence archives of retired agents (written by agents retire)."
    actions = parser.add_subparsers(dest="archive_action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "verify",
        help="recompute every file's SHA-256 and row count and compare with the manifest",
        description=(
            "Exit 0 when every file matches manifest.json; 1 listing each file changed, "
            "missing or unlisted. --manifest-sha256 also checks the manifest itself against "
            "the digest recorded in the actions table at retirement."
        ),
    )
    p.add_argument("path", type=Path, metavar="PATH", help="the archive folder")
    p.add_argument("--manifest-sha256", metavar="HEX", help="the manifest's expected digest")
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text for people, json for tools (default %(default)s)",
    )
    p.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    verdict = verify_archive(args.path, args.manifest_sha256)
    if args.format == "json":
        print_json(
            {
                "path": str(verdict.path),
                "intact": verdict.intact,
                "problems": list(verdict.problems),
                "manifest": None if verdict.manifest is None else manifest_json(verdict.manifest),
            }
        )
    elif verdict.intact and verdict.manifest is not None:
        manifest = verdict.manifest
        rows = sum(f.rows for f in manifest.files)
        print(
            f"{args.path}: intact: {len(manifest.files)} files, {rows} rows of agent "
            f"{manifest.agent_id}, archived {manifest.created_at:%Y-%m-%d %H:%M} UTC"
        )
    for problem in verdict.problems:
        print(f"agentwatch: {args.path}: {problem}", file=sys.stderr)
    return 0 if verdict.intact else 1
