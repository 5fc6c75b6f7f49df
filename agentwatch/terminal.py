"""Terminal tables whose cells show data as it is: never read as Rich markup.

Rich reads ``[...]`` in a string as markup, so a stored value such as ``x[/]y`` would
crash a table (``MarkupError``) and ``[link=http://...]click[/link]`` would print as a
styled link. The :class:`Table` here takes every string it is given (cells, headers,
title, caption) as plain text; styling comes from its style options (``header_style``,
``title_style``, a column's ``style``) or from a :class:`rich.text.Text` built by the
caller, never from inside data. Terminal control characters (an escape sequence that
would move the cursor or recolour the screen) are shown as ``\\x1b``-style escapes.

For a line printed with markup around data, escape the data with :func:`literal`.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.style import StyleType
from rich.table import Column
from rich.table import Table as RichTable
from rich.text import Text

# C0 controls but tab and newline, DEL and the C1 controls (CSI among them).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(value: str) -> str:
    """``value`` with terminal control characters shown as escapes (``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def text(value: object, style: StyleType = "") -> Text:
    """``value`` as a literal cell: no markup, no emoji codes, controls made visible."""
    return Text(visible(str(value)), style=style)


def literal(value: object) -> str:
    """``value`` escaped for a markup string: ``f"[bold]{literal(name)}[/]"``."""
    return escape(visible(str(value)))


def _plain(renderable: RenderableType | None) -> RenderableType | None:
    return text(renderable) if isinstance(renderable, str) else renderable


class Table(RichTable):
    """A ``rich.table.Table`` whose string cells, headers, title and caption are data."""

    def __init__(self, *headers: Column | str, **options: Any) -> None:
        super().__init__(*headers, **options)
        # Title and caption stay strings so that title_style and caption_style apply.
        if isinstance(self.title, str):
            self.title = literal(self.title)
        if isinstance(self.caption, str):
            self.caption = literal(self.caption)

    def add_column(
        self, header: RenderableType = "", footer: RenderableType = "", **options: Any
    ) -> None:
        super().add_column(_plain(header) or "", _plain(footer) or "", **options)

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: StyleType | None = None,
        end_section: bool = False,
    ) -> None:
        super().add_row(*(_plain(r) for r in renderables), style=style, end_section=end_section)
