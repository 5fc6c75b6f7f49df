"""A process that keeps a SQLite metadata database open, so its write-ahead log stays.

DuckDB's sqlite extension opens a SQLite connection for each transaction and closes it
at the end. SQLite makes the last connection to close a database checkpoint its
write-ahead log (with an fsync) under an exclusive lock and delete it; the next one to
open rebuilds it. A connection starting a read meanwhile retries and then sleeps, and
the SQLite inside that extension sleeps whole seconds (it is built without usleep):
with two landing workers and a reader on one lake, one to three commits a minute per
worker took 1.1 to 1.3 s instead of about 0.1 s, and a reader's query now and then
took 1 s more (measured). While another process holds it open, none of that happens:
the same runs had no such stall.

The connection must be in another process: locks on a file are the process's, and a
connection of this process would lose them whenever DuckDB's SQLite closed the file.
So :func:`keep` starts a small child that opens the database, reads once (the read
takes the lock an open connection holds in WAL mode), says so, and waits for its input
to end, which happens when the parent stops it or dies. It never writes and holds no read
transaction open, so checkpoints go on as before.
"""

from __future__ import annotations

import logging
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
READY = b"held\n"


class WalKeeper:
    """The child holding a metadata database open (None: nothing held); :meth:`stop`
    lets it go."""

    def __init__(self, child: subprocess.Popen[bytes] | None) -> None:
        self.child = child

    def stop(self) -> None:
        """Close the child's input (it closes the database and exits), then reap it."""
        child, self.child = self.child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def keep(metadata_file: Path | None) -> WalKeeper:
    """Keep a local SQLite metadata database open from a child process; nothing is held
    for a PostgreSQL one, or when the child cannot start (landing goes on without it)."""
    if metadata_file is None:
        return WalKeeper(None)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(metadata_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
    except OSError as exc:
        return _nothing_held(metadata_file, repr(exc))
    keeper = WalKeeper(child)
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], READY_TIMEOUT_S)
    said = child.stdout.readline() if ready else b"no answer"
    if said != READY:
        keeper.stop()
        return _nothing_held(metadata_file, said.decode(errors="replace").strip())
    return keeper


def _nothing_held(metadata_file: Path, error: str) -> WalKeeper:
    log.warning(
        "cannot keep the metadata database open", extra={"db": str(metadata_file), "error": error}
    )
    return WalKeeper(None)


def main(path: str) -> None:
    """The child: open, read once, wait for the parent's end of the pipe to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to handle
    try:
        uri = Path(path).absolute().as_uri() + "?mode=rw"  # never creates one
        con = sqlite3.connect(uri, uri=True)
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:  # the parent logs it
        sys.stdout.buffer.write(f"{exc}\n".encode())
        sys.exit(1)
    try:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        sys.stdin.buffer.read()
    finally:
        con.close()


if __name__ == "__main__":
    main(sys.argv[1])
