"""Minimal redaction of message content kept from spans (emails, phones, cards, keys).

Content is kept only when configured, and then only through a ``Redactor``: any
function from text to text. ``redact_text`` is the built-in one; a fuller redaction
module can replace it by being passed as the mapping's ``redact``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

Redactor = Callable[[str], str]

_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Key-like tokens: known prefixes, or long runs mixing letters and digits.
_API_KEY: Final = re.compile(
    r"\b(?:sk|pk|rk|ghp|gho|ghs|xox[abprs]|AKIA|AIza)[-_A-Za-z0-9]{12,}\b"
    r"|\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b"
)
_CARD: Final = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_PHONE: Final = re.compile(r"(?<![\w+])\+?\d[\d ().-]{7,}\d\b")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[PHONE]" if 8 <= len(digits) <= 15 else match.group()


def redact_text(text: str) -> str:
    """Replace emails, API-key-like tokens, card numbers (Luhn-checked) and phone numbers."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _API_KEY.sub("[KEY]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)
