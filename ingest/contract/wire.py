"""Where the events travel and how big one may be: the events topic's name and a record's
size limit, in a module light enough for settings to import at every start (the event
types in events.py take longer to define than a short command takes to run)."""

from __future__ import annotations

from typing import Final

DEFAULT_TOPIC: Final = "agent-events"
DEFAULT_MAX_MESSAGE_BYTES: Final = 256 * 1024
