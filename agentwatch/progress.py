"""Progress of long commands: a bar on a terminal, a log line each tenth elsewhere.

On a terminal (stderr) the bar shows the steps done and the time left. When stderr is
not a terminal (CI, a pipe, a service's journal) a bar would only fill the log with
control characters, so each time another tenth of the steps is done one info line is
logged instead (``<what>: 30 of 96``, with ``done`` and ``total`` as fields).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger(__name__)

# Log lines over a whole run when stderr is not a terminal.
LOGGED_STEPS: Final = 10


@contextmanager
def progress_bar(what: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``: a bar on a terminal's stderr, else progress log lines."""
    if not enabled or total <= 1:
        yield lambda n: None
        return
    if not sys.stderr.isatty():
        yield _logger(what, total)
        return
    console = Console(stderr=True)
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _logger(what: str, total: int) -> Callable[[int], None]:
    done = 0
    logged = 0  # tenths already logged

    def advance(n: int) -> None:
        nonlocal done, logged
        done += n
        tenth = min(LOGGED_STEPS, done * LOGGED_STEPS // total)
        if tenth > logged:
            logged = tenth
            log.info(f"{what}: {done} of {total}", extra={"done": done, "total": total})

    return advance
