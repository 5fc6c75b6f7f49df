"""Reading a YAML file, once for every format: safe, strict about keys, one-line errors.

Every YAML format here (rules, runbooks, the agent catalog, notification routes, drift,
pricing, redaction, scenarios) is read by :func:`read_yaml` and then decoded into its
typed structs. It loads safely (no Python objects), refuses a key written twice in one
mapping (PyYAML would keep the last one silently; keys merged in with ``<<: *anchor`` may
be overridden), keeps dates as text (each format decides what a date is, so a bad one
gets that format's error), reads only ``true`` and ``false`` as booleans, as YAML 1.2
does (YAML 1.1 also reads ``on``, ``off``, ``yes``, ``no``, ``y`` and ``n``, so a
redaction rule named ``off`` became the key ``False``), and says what is wrong in one line:
``rules.yaml:12:5: not valid YAML: mapping values are not allowed here``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

from agentwatch.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, with duplicate keys refused and dates left as text."""


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


def _text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _text)


def parse_yaml(text: str, source: object, error: type[ConfigError] = ConfigError) -> Any:
    """The document in ``text``; ``source`` (a file name) starts the error's one line."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise error(f"{_where(source, exc)}: not valid YAML: {_problem(exc)}") from None


# Far more than any settings file needs; a device or a runaway pipe given as one (e.g.
# /dev/zero) is refused after this much instead of read for ever.
MAX_YAML_BYTES: Final = 16 << 20


def read_yaml(path: Path, error: type[ConfigError] = ConfigError) -> Any:
    """The document in the file ``path``; unreadable or invalid files raise ``error``."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise error(f"{path}: cannot read: larger than {MAX_YAML_BYTES >> 20} MB")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(f"{path}: cannot read: {reason}") from None
    return parse_yaml(text, path, error)


def _where(source: object, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return str(source)
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [exc.context, exc.problem] if exc.context else [exc.problem]
        text = ", ".join(p for p in parts if p)
        if text:
            return text
    return " ".join(str(exc).split())


__all__ = ["parse_yaml", "read_yaml"]
