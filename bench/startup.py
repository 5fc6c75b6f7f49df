"""Start-up time of the CLI against ``python -c "import duckdb"`` on the same machine.

A command imports only what it uses, so ``agentwatch --version`` and ``agentwatch sql
"SELECT 1"`` should take at most three times as long as Python importing DuckDB. Since the
store is a DuckLake lake, ``sql`` also loads two signed DuckDB extensions and attaches the
lake, which any DuckDB reader of the lake pays too: ``duckdb_attach`` (plain DuckDB doing
just that) is measured beside it, so the CLI's own share stays visible. Each
command runs several times, alternating, and the medians of wall time and of CPU time
(user + system of the child) are compared. The last line printed is one JSON object;
the exit code is 1 when a command takes more than the target ratio.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 7
TARGET_RATIO = 3.0


def agentwatch_command() -> list[str]:
    """The installed ``agentwatch`` script beside this Python, as users run it."""
    script = Path(sys.executable).parent / "agentwatch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentwatch.cli"]


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv``, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    from agentwatch.processors.store.attach import attach_statement
    from agentwatch.processors.store.extensions import extension_dir
    from agentwatch.processors.store.lake import LakeStore

    with tempfile.TemporaryDirectory(prefix="agentwatch-startup-") as tmp:
        db = Path(tmp) / "agentwatch.sqlite"
        store = LakeStore(db)
        store.prepare()  # `sql` reads a lake that exists
        store.close()
        agentwatch = agentwatch_command()
        attach = (
            "import duckdb; con = duckdb.connect(config={"
            f"'extension_directory': {str(extension_dir())!r}, "
            "'autoinstall_known_extensions': False, 'autoload_known_extensions': False}); "
            "con.execute('LOAD ducklake'); con.execute('LOAD sqlite_scanner'); "
            f"con.execute({attach_statement(db)!r}); con.execute('SELECT 1').fetchall()"
        )
        commands = {
            "import_duckdb": [sys.executable, "-c", "import duckdb"],
            "duckdb_attach": [sys.executable, "-c", attach],
            "version": [*agentwatch, "--version"],
            "sql": [*agentwatch, "sql", "SELECT 1", "--db", str(db)],
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():
            timed(argv)  # warm the file cache once, not counted
        for _ in range(RUNS):
            for name, argv in commands.items():
                wall, cpu = timed(argv)
                walls[name].append(wall)
                cpus[name].append(cpu)
    median_wall = {name: statistics.median(values) for name, values in walls.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpus.items()}
    base = median_wall["import_duckdb"]
    ratios = {name: round(median_wall[name] / base, 2) for name in ("version", "sql")}
    # The CLI's own cost over a plain DuckDB reader of the same lake.
    sql_over_attach = round(median_wall["sql"] / median_wall["duckdb_attach"], 2)
    result = {
        "bench": "startup",
        "runs": RUNS,
        "median_wall_s": {name: round(v, 3) for name, v in median_wall.items()},
        "median_cpu_s": {name: round(v, 3) for name, v in median_cpu.items()},
        "ratio_to_import_duckdb": ratios,
        "sql_ratio_to_duckdb_attach": sql_over_attach,
        "target_ratio": TARGET_RATIO,
        "within_target": all(r <= TARGET_RATIO for r in ratios.values()),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
