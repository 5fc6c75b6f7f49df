"""The ``contract`` command: print the JSON Schema, or check a file of events against it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwatch.commands.options import at_least_one
from agentwatch.ingest.contract.events import schema_text
from agentwatch.ingest.contract.wire import DEFAULT_MAX_MESSAGE_BYTES
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Print the event contract's JSON Schema, or check a JSON Lines file of "
        "events against the contract exactly as the processor does."
    )
    p = parser
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    schema = actions.add_parser("schema", help="print the JSON Schema (draft 2020-12)")
    schema.add_argument("--out", type=Path, help="write it to this file instead of stdout")
    schema.set_defaults(handler=_schema)
    check = actions.add_parser(
        "check",
        help="validate a JSON Lines file (one event a line); exit 1 if any is invalid or the "
        "file cannot be read",
    )
    check.add_argument("file", type=Path, help="JSON Lines file, or - for stdin")
    check.add_argument(
        "--max-message-bytes",
        type=at_least_one,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="a longer line is invalid, as the processor refuses it (default %(default)s)",
    )
    check.set_defaults(handler=_check)


def _schema(args: argparse.Namespace) -> int:
    if args.out:
        args.out.write_text(schema_text())
    else:
        sys.stdout.write(schema_text())
    return 0


def _check(args: argparse.Namespace) -> int:
    from agentwatch.processors.landing.decode import validate

    # A file that cannot be read is one line and exit 1, as for every command (cli.py).
    data = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    checked = bad = 0
    for number, line in enumerate(data.splitlines(), start=1):  # the file's line numbers
        if not line.strip():
            continue  # blank lines are no events
        checked += 1
        verdict = validate(line, args.max_message_bytes)
        if verdict is not None:
            bad += 1
            print(f"line {number}: {verdict[1]}")
    print(f"{checked - bad} valid, {bad} invalid")
    return 1 if bad else 0
