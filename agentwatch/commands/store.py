"""The ``store`` command: maintain the lake, migrate an old data dir, attach from plain DuckDB."""

from __future__ import annotations

import argparse
import json
import sys

from agentwatch.commands.options import add_db_option, duration_help, seconds
from agentwatch.errors import ConfigError
from agentwatch.setting_types import MAX_RETENTION_DAYS
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "The store is a DuckLake lake: a metadata database (a SQLite file on one machine, "
        "PostgreSQL for several) and Parquet data files. `agentwatch process` maintains it "
        "by itself every [storage] maintain_interval; `maintain` runs one pass now. "
        "`migrate` converts a data dir of the older segment layout; `attach` prints the "
        "statement that opens the lake read-only in a plain DuckDB session."
    )
    actions = parser.add_subparsers(dest="store_action", metavar="ACTION", required=True)

    maintain = actions.add_parser(
        "maintain",
        help="apply retention, merge small files, expire snapshots, delete dead files",
        description=(
            "One maintenance pass: delete rows older than each table's retention (except "
            "agents under legal hold), merge small files, expire snapshots older than the "
            "grace period and delete the files nothing reads any more. Safe while "
            "processors land and analysts query: the pass works in small steps and pauses "
            "after each as long as it took, so landing goes on. Prints a JSON summary."
        ),
    )
    maintain.add_argument(
        "--no-pause",
        action="store_true",
        help="run the steps back to back (faster, for when nothing lands meanwhile)",
    )
    add_db_option(
        maintain, settings, "the lake's metadata database: a SQLite file or postgres:<dsn>"
    )
    add_maintenance_options(maintain, settings)
    maintain.set_defaults(handler=_maintain)

    migrate = actions.add_parser(
        "migrate",
        help="convert a data dir of the older segment layout into a lake",
        description=(
            "Read every Parquet segment of a data dir in the layout before the lake "
            "(segments/ and a DuckDB file of views) into a new lake beside it, with each "
            "partition's landed offset, so processors resume exactly where they were. "
            "The old files are left in place (delete them once you are satisfied)."
        ),
    )
    add_db_option(migrate, settings, "the old layout's DuckDB file (or its data dir)")
    migrate.add_argument(
        "--to",
        default=None,
        metavar="DB",
        help="the new lake's metadata database (default: agentwatch.sqlite in the same data dir)",
    )
    migrate.set_defaults(handler=_migrate)

    attach = actions.add_parser(
        "attach",
        help="print the SQL that attaches the lake read-only in a plain DuckDB session",
        description=(
            "Print the statements a plain DuckDB session (CLI or Python) runs to read the "
            "lake: ATTACH ... (READ_ONLY) and USE. Save them as a startup file: "
            "`agentwatch store attach > attach.sql; duckdb -init attach.sql`."
        ),
    )
    add_db_option(attach, settings, "the lake's metadata database: a SQLite file or postgres:<dsn>")
    attach.set_defaults(handler=_attach)


def add_maintenance_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Retention, legal hold and grace: shared by ``process`` and ``store maintain``."""
    parser.add_argument(
        "--retention",
        action="append",
        default=[],
        metavar="TABLE=DAYS",
        help=(
            f"days of rows a table keeps, 0 for ever, at most {MAX_RETENTION_DAYS}; repeatable "
            "(default [storage] retention_days: events 30; minute rollups, alerting and audit "
            "tables 400)"
        ),
    )
    parser.add_argument(
        "--legal-hold",
        action="append",
        default=list(settings.value("storage", "legal_hold")),
        metavar="AGENT",
        help="an agent whose rows retention never deletes; repeatable ([storage] legal_hold)",
    )
    parser.add_argument(
        "--snapshot-grace",
        type=seconds,
        default=settings.value("storage", "snapshot_grace"),
        metavar="DURATION",
        help=duration_help(
            "how long replaced files stay readable, longer than any query runs",
            settings.value("storage", "snapshot_grace"),
        ),
    )
    parser.set_defaults(retention_defaults=dict(settings.value("storage", "retention_days")))


def retention_from_args(args: argparse.Namespace) -> dict[str, int]:
    """The settings' retention with each ``--retention TABLE=DAYS`` applied."""
    from agentwatch.processors.store.tables import TABLE_SCHEMAS

    days: dict[str, int] = dict(args.retention_defaults)
    for item in args.retention:
        table, sep, value = item.partition("=")
        count = _days(value) if sep else None
        if count is None:
            raise ConfigError(f"--retention {item!r}: expected TABLE=DAYS, e.g. events=30")
        if table not in TABLE_SCHEMAS:
            raise ConfigError(
                f"--retention {item!r}: no table {table!r}; tables: {', '.join(TABLE_SCHEMAS)}"
            )
        if count > MAX_RETENTION_DAYS:
            raise ConfigError(
                f"--retention {item!r}: at most {MAX_RETENTION_DAYS} days (0 keeps rows for ever)"
            )
        days[table] = count
    return days


def _days(text: str) -> int | None:
    """A number of days, 0 or more, or None."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def _maintain(args: argparse.Namespace) -> int:
    from agentwatch.processors.store.attach import require_lake
    from agentwatch.processors.store.lake import LakeStore
    from agentwatch.processors.store.location import locate
    from agentwatch.processors.store.maintain import MaintenancePolicy, maintain

    days = retention_from_args(args)
    require_lake(locate(args.db))  # maintenance of a mistyped --db creates nothing
    store = LakeStore(args.db)
    policy = MaintenancePolicy(days, tuple(args.legal_hold), args.snapshot_grace)
    report = maintain(store, policy, pause=(lambda _: None) if args.no_pause else None)
    print(
        json.dumps(
            {
                "rows_deleted": report.rows_deleted,
                "rollup_rows_merged": report.rollup_rows_merged,
                "files_before": report.files_before,
                "files_after": report.files_after,
                "snapshots_expired": report.snapshots_expired,
                "files_removed": report.files_removed,
                "seconds": round(report.seconds, 3),
                "steps": report.steps,
                "longest_step_s": round(report.longest_step_s, 3),
            }
        )
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from agentwatch.processors.store.migrate import migrate

    report = migrate(args.db, args.to)
    print(
        f"Migrated {report.events:,} events and {report.other_rows:,} other rows from "
        f"{report.source} into {report.target}; {report.partitions} partition offsets kept. "
        f"Use --db {report.target} from now on."
    )
    return 0


def _attach(args: argparse.Namespace) -> int:
    from agentwatch.processors.store.attach import attach_statement, refuse_foreign, require_lake
    from agentwatch.processors.store.location import locate

    location = locate(args.db)
    require_lake(location)  # a statement for a mistyped --db would attach nothing
    refuse_foreign(location)
    sys.stdout.write(attach_statement(args.db) + "\n")
    return 0
