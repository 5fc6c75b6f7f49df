"""Decoding a parsed file (YAML or TOML) into typed msgspec structs, with errors that say where.

Every problem is one :class:`~agentwatch.errors.ConfigError` line naming the file, the
key path and what is wrong: an unknown key with the closest valid one
(``global.retry.attemps: unknown key (did you mean attempts?)``), a key the chosen kind of
a tagged entry does not take (``steps[0]: open_breaker takes no rate``), an unknown tag
(``steps[1].action: unknown action 'reboot' ...``) or a value of the wrong type
(``global.retry.attempts: Expected `int`, got `str```), and a required key that is not
there (``route: required key is missing``). Keys are checked at every depth,
lists and mappings of structs included, before the types are.

A key written with nothing after it (YAML's null) is the default, as in Alertmanager,
unless the field itself takes null: a ``receivers:`` whose entries are all commented out
is no receivers, not an error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from agentwatch.errors import ConfigError

S = TypeVar("S", bound=msgspec.Struct)


class DecodeError(ConfigError, ValueError):
    """A file's value that does not fit its format; the message names the key path."""


_AT = re.compile(r"^(?P<problem>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]*)`$")
_SEQUENCES = (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)


def decode(
    value: Any,
    struct: type[S],
    where: str,
    source: object | None = None,
    error: type[ConfigError] = DecodeError,
) -> S:
    """``value`` (from a parsed file) as ``struct``; ``where`` is its key path in the file
    (``""`` for the whole file).

    The message starts with ``source:`` when it is given (callers that add the file name
    themselves leave it out). A problem raises ``error``: each format's own error class,
    which its callers catch.
    """
    prefix = f"{source}: " if source is not None else ""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise error(f"{prefix}{_located(where, f'must be a mapping, got {value!r}')}")
    try:
        return msgspec.convert(_prepared(value, mi.type_info(struct), where), struct)
    except DecodeError as exc:
        raise error(f"{prefix}{exc}") from None
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int`, got `str` - at `$.retry.attempts`".
        match = _AT.match(str(exc))
        problem, path = (match["problem"], match["path"]) if match else (str(exc), "")
        missing = _MISSING.match(problem)
        if missing:  # named by its own key path, as every other problem is
            problem, path = "required key is missing", f"{path}.{missing['key']}"
        raise error(f"{prefix}{_located(where + path, problem)}") from None


def _located(path: str, problem: str) -> str:
    path = path.removeprefix(".")
    return f"{path}: {problem}" if path else problem


def _prepared(value: Any, info: mi.Type, path: str) -> Any:
    """``value`` with null keys dropped where they mean the default; raises DecodeError
    at the first key (in file order) that its struct does not have."""
    info = _member(value, info, path)
    if isinstance(info, mi.StructType) and isinstance(value, dict):
        return _struct_value(value, info, path)
    if isinstance(info, _SEQUENCES) and isinstance(value, list):
        return [_prepared(v, info.item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(info, mi.DictType) and isinstance(value, dict):
        return {k: _prepared(v, info.value_type, f"{path}.{k}") for k, v in value.items()}
    return value


def _struct_value(value: dict[Any, Any], info: mi.StructType, path: str) -> dict[Any, Any]:
    fields = {f.encode_name: f for f in info.fields}
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if key == info.tag_field:
            out[key] = item
            continue
        if key not in fields:
            hint = did_you_mean([key], [*fields, *([info.tag_field] if info.tag_field else [])])
            if info.tag_field is not None:  # the key may well suit another kind of entry
                raise DecodeError(_located(path, f"{info.tag} takes no {key}{hint}"))
            raise DecodeError(_located(f"{path}.{key}", f"unknown key{hint}"))
        kind = fields[key].type
        if item is not None or _takes_null(kind):
            out[key] = _prepared(item, kind, f"{path}.{key}")
    return out


def _member(value: Any, info: mi.Type, path: str) -> mi.Type:
    """The member of a union that ``value`` decodes as: a tagged struct by its tag."""
    if not isinstance(info, mi.UnionType):
        return info
    structs = [t for t in info.types if isinstance(t, mi.StructType)]
    tag_field = structs[0].tag_field if structs else None
    if isinstance(value, dict) and tag_field is not None and tag_field in value:
        tag = value[tag_field]
        tags = [str(t.tag) for t in structs]
        chosen = next((t for t in structs if t.tag == tag), None)
        if chosen is None:
            hint = did_you_mean([tag], tags) or f" (one of {', '.join(tags)})"
            raise DecodeError(_located(f"{path}.{tag_field}", f"unknown {tag_field} {tag!r}{hint}"))
        return chosen
    kinds = (mi.StructType, mi.DictType) if isinstance(value, dict) else _SEQUENCES
    fitting = [t for t in info.types if isinstance(t, kinds)]
    return fitting[0] if len(fitting) == 1 and isinstance(value, dict | list) else info


def _takes_null(info: mi.Type) -> bool:
    members = info.types if isinstance(info, mi.UnionType) else (info,)
    return any(isinstance(t, mi.NoneType | mi.AnyType) for t in members)


def did_you_mean(unknown: Iterable[object], allowed: Iterable[object]) -> str:
    """`` (did you mean KEY?)`` for the first unknown key close to a valid one, else ``""``."""
    valid = [str(k) for k in allowed]
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=1)
        if close:
            return f" (did you mean {close[0]}?)"
    return ""


__all__ = ["DecodeError", "decode", "did_you_mean"]
