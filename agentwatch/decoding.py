"""Decoding a parsed file (YAML or TOML) into typed msgspec structs, with errors that say where.

Every problem is one :class:`~agentwatch.settings.ConfigError` line naming the file, the
key path and what is wrong: an unknown key with the closest valid one
(``global.retry.attemps: unknown key (did you mean attempts?)``), or a value of the
wrong type (``global.retry.attempts: Expected `int`, got `str```).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from agentwatch.settings import ConfigError, check_keys, struct_keys

S = TypeVar("S", bound=msgspec.Struct)


class DecodeError(ConfigError, ValueError):
    """A file's value that does not fit its format; the message names the key path."""


_AT = re.compile(r"^(?P<problem>.*) - at `\$(?P<path>[^`]*)`$", re.S)


def decode(value: Any, struct: type[S], where: str, source: object | None = None) -> S:
    """``value`` (from a parsed file) as ``struct``; ``where`` is its key path in the file.

    The message starts with ``source:`` when it is given (callers that add the file name
    themselves leave it out).
    """
    prefix = f"{source}: " if source is not None else ""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise DecodeError(f"{prefix}{where}: must be a mapping, got {value!r}")
    try:
        check_keys(value, struct_keys(struct), "", where)
    except ConfigError as exc:
        raise DecodeError(f"{prefix}{str(exc).removeprefix(': ')}") from None
    try:
        return msgspec.convert(value, struct)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int`, got `str` - at `$.retry.attempts`".
        match = _AT.match(str(exc))
        problem, path = (match["problem"], match["path"]) if match else (str(exc), "")
        raise DecodeError(f"{prefix}{where}{path}: {problem}") from None


def did_you_mean(unknown: Iterable[object], allowed: Iterable[object]) -> str:
    """`` (did you mean KEY?)`` for the first unknown key close to a valid one, else ``""``."""
    valid = [str(k) for k in allowed]
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=1)
        if close:
            return f" (did you mean {close[0]}?)"
    return ""


__all__ = ["DecodeError", "decode", "did_you_mean"]
