"""Alertmanager-style routing: a tree of label matchers that picks receivers and groups.

Why mirror Alertmanager: people who run it already know what a route, ``continue``,
``group_by`` and the three timers mean, and a config written for one reads the same in
the other. Semantics follow Alertmanager: an alert walks down from the root, taking the
first child whose matchers all hold (every matching child when ``continue`` is set);
the deepest matching routes are its targets. Children inherit what they do not set.

One addition: ``receiver_from: oncall`` (or ``owner``) names the receiver after the
agent's contact in the agent catalog, so a new agent is paged correctly without a new
route. The contact comes from the alert's own label of that name, else from a lookup
function the caller passes (the catalog); an unknown name falls back to ``receiver``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import msgspec

from agentwatch.decoding import DecodeError, decode
from agentwatch.durations import DurationError, parse_duration

log = logging.getLogger(__name__)

MatchOp = Literal["=", "!=", "=~", "!~"]
# (agent_id, field) -> receiver name, e.g. ("support-bot", "oncall") -> "support-pager".
if TYPE_CHECKING:
    from agentwatch.alerts.governance.catalog import Catalog

ContactLookup = Callable[[str, str], str | None]
ContactField = Literal["oncall", "owner"]
CONTACT_FIELDS: tuple[str, ...] = get_args(ContactField)
ALL_LABELS = "..."

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class RoutingError(ValueError):
    """A matcher, duration or route that cannot be used."""


@dataclass(frozen=True)
class Matcher:
    """One label condition; a missing label reads as the empty string, as in Alertmanager."""

    name: str
    op: MatchOp
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, op: MatchOp, value: str) -> Matcher:
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)  # anchored by fullmatch
            except re.error as exc:
                raise RoutingError(f"bad regex in matcher {name}{op}{value!r}: {exc}") from None
        return cls(name, op, value, pattern)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``; quotes optional.

        ``name==value`` is refused rather than read as a value starting with ``=``; such a
        value is written quoted (``name="=value"``), as in Alertmanager.
        """
        m = _MATCHER.match(text)
        if not m:
            raise RoutingError(f"bad matcher {text!r} (use name=value, !=, =~ or !~)")
        name, op, value = m.group(1), m.group(2), m.group(3)
        if op == "=" and value.startswith("="):  # name==value: = is the operator, once
            raise RoutingError(
                f"bad matcher {text!r}: did you mean {name}={value[1:].lstrip()}? "
                f'(a value that starts with = is written quoted: {name}="{value}")'
            )
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return cls.create(name, op, value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def label_set_string(labels: Mapping[str, str]) -> str:
    """``{a="1", b="2"}``: sorted, quoted, as Alertmanager spells label sets in group keys."""
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + body + "}"


@dataclass(frozen=True)
class RouteTarget:
    """Where one alert goes through one route: receiver, grouping and timers."""

    route_key: str
    receiver: str
    group_by: tuple[str, ...] | None  # None: group by every label ("...")
    group_wait: dt.timedelta
    group_interval: dt.timedelta
    repeat_interval: dt.timedelta

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by is None:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if labels.get(k)}

    def group_key(self, labels: Mapping[str, str]) -> str:
        return f"{self.route_key}:{label_set_string(self.group_labels(labels))}"


@dataclass
class Route:
    """A node of the tree; ``None`` fields inherit the parent's value once resolved."""

    receiver: str | None = None
    receiver_from: str | None = None
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    group_by: tuple[str, ...] | None = None
    group_by_all: bool = False
    group_wait: dt.timedelta | None = None
    group_interval: dt.timedelta | None = None
    repeat_interval: dt.timedelta | None = None
    routes: list[Route] = field(default_factory=list)
    key: str = "{}"


ROOT_DEFAULTS = {
    "group_wait": dt.timedelta(seconds=30),
    "group_interval": dt.timedelta(minutes=5),
    "repeat_interval": dt.timedelta(hours=4),
}


class RouteDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A route as written: Alertmanager's keys, plus ``receiver_from``. Unset timers,
    receiver and grouping (``None``) are inherited from the parent."""

    receiver: str | None = None
    receiver_from: ContactField | None = None
    matchers: str | tuple[str, ...] = ()
    match: dict[str, str] = {}
    match_re: dict[str, str] = {}
    continue_: bool = msgspec.field(default=False, name="continue")
    group_by: tuple[str, ...] | None = None
    group_wait: str | float | None = None
    group_interval: str | float | None = None
    repeat_interval: str | float | None = None
    routes: tuple[RouteDoc, ...] = ()


def parse_route(doc: Mapping[str, Any], *, path: str = "route") -> Route:
    """A route from its YAML mapping; ``path`` is where it sits in the file."""
    try:
        return route_from_doc(decode(dict(doc), RouteDoc, path), path=path)
    except DecodeError as exc:
        raise RoutingError(str(exc)) from None


def route_from_doc(doc: RouteDoc, *, path: str = "route") -> Route:
    """The route tree of a decoded route: matchers parsed, timers read as durations."""
    texts = [doc.matchers] if isinstance(doc.matchers, str) else doc.matchers
    matchers = parse_matchers(texts, doc.match, doc.match_re, path)
    group_by_all = doc.group_by is not None and ALL_LABELS in doc.group_by

    def timer(name: str) -> dt.timedelta | None:
        raw = getattr(doc, name)
        if raw is None:
            return None
        try:
            span = parse_duration(raw)
        except DurationError as exc:
            raise RoutingError(f"{path}.{name}: {exc}") from None
        if name != "group_wait" and not span:  # group_wait 0: notify at once
            given = raw if isinstance(raw, str) else format(raw, "g")
            raise RoutingError(f"{path}.{name}: must be above 0, got {given}")
        return span

    return Route(
        receiver=doc.receiver,
        receiver_from=doc.receiver_from,
        matchers=matchers,
        continue_=doc.continue_,
        group_by=None if group_by_all else doc.group_by,
        group_by_all=group_by_all,
        group_wait=timer("group_wait"),
        group_interval=timer("group_interval"),
        repeat_interval=timer("repeat_interval"),
        routes=[
            route_from_doc(child, path=f"{path}.routes[{i}]") for i, child in enumerate(doc.routes)
        ],
    )


def parse_matchers(
    texts: Sequence[str],
    match: Mapping[str, str],
    match_re: Mapping[str, str],
    path: str,
    prefix: str = "",
) -> tuple[Matcher, ...]:
    """The matchers of a route (or, with ``prefix`` ``source_``/``target_``, of one side of
    an inhibit rule) from its three keys; an error names the key path of the bad one."""
    out: list[Matcher] = []
    for i, text in enumerate(texts):
        # One string may hold several comma-separated matchers, as in Alertmanager.
        with _located(f"{path}.{prefix}matchers[{i}]"):
            out.extend(Matcher.parse(part) for part in _split_matchers(text))
    by_name: tuple[tuple[str, MatchOp, Mapping[str, str]], ...] = (
        ("match", "=", match),
        ("match_re", "=~", match_re),
    )
    for key, op, pairs in by_name:
        for name, value in pairs.items():
            with _located(f"{path}.{prefix}{key}.{name}"):
                out.append(Matcher.create(name, op, value))
    return tuple(out)


@contextlib.contextmanager
def _located(path: str) -> Iterator[None]:
    """A RoutingError raised inside, prefixed with the key path it is about."""
    try:
        yield
    except RoutingError as exc:
        raise RoutingError(f"{path}: {exc}") from None


def _split_matchers(text: str) -> list[str]:
    """Split ``a="x,y", b=~"z"`` on commas outside quotes."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text.strip().removeprefix("{").removesuffix("}"):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return [p for p in (x.strip() for x in parts) if p]


@dataclass(frozen=True)
class _Resolved:
    """A route with everything inherited filled in."""

    receiver: str | None
    receiver_from: str | None
    group_by: tuple[str, ...] | None
    group_wait: dt.timedelta
    group_interval: dt.timedelta
    repeat_interval: dt.timedelta


def _or(value: dt.timedelta | None, default: dt.timedelta) -> dt.timedelta:
    """``value`` unless unset: a zero duration is a setting, not a missing one."""
    return default if value is None else value


class Router:
    """Finds the targets of an alert's labels in a route tree."""

    def __init__(
        self,
        root: Route,
        receivers: Sequence[str],
        contact_lookup: ContactLookup | None = None,
    ) -> None:
        self.root = root
        self.receivers = frozenset(receivers)
        self.contact_lookup = contact_lookup
        self._warned: set[tuple[str, str]] = set()
        self._assign_keys(root, "{}")
        base = _Resolved(
            receiver=root.receiver,
            receiver_from=root.receiver_from,
            group_by=() if root.group_by is None and not root.group_by_all else root.group_by,
            group_wait=_or(root.group_wait, ROOT_DEFAULTS["group_wait"]),
            group_interval=_or(root.group_interval, ROOT_DEFAULTS["group_interval"]),
            repeat_interval=_or(root.repeat_interval, ROOT_DEFAULTS["repeat_interval"]),
        )
        if base.receiver is None:
            raise RoutingError("route: the root route needs a receiver")
        self._validate(root, base, "route")
        self._base = base

    def _assign_keys(self, route: Route, key: str) -> None:
        route.key = key
        for child in route.routes:
            child_key = "{" + ",".join(str(m) for m in child.matchers) + "}"
            self._assign_keys(child, f"{key}/{child_key}")

    def _validate(self, route: Route, resolved: _Resolved, path: str) -> None:
        if resolved.receiver is not None and resolved.receiver not in self.receivers:
            raise RoutingError(f"{path}: receiver {resolved.receiver!r} is not defined")
        for i, child in enumerate(route.routes):
            self._validate(child, self._inherit(resolved, child), f"{path}.routes[{i}]")

    @staticmethod
    def _inherit(parent: _Resolved, route: Route) -> _Resolved:
        group_by = parent.group_by
        if route.group_by_all:
            group_by = None
        elif route.group_by is not None:
            group_by = route.group_by
        return _Resolved(
            receiver=route.receiver if route.receiver is not None else parent.receiver,
            receiver_from=route.receiver_from or parent.receiver_from,
            group_by=group_by,
            group_wait=_or(route.group_wait, parent.group_wait),
            group_interval=_or(route.group_interval, parent.group_interval),
            repeat_interval=_or(route.repeat_interval, parent.repeat_interval),
        )

    def targets(self, labels: Mapping[str, str]) -> list[RouteTarget]:
        """Every target of an alert with these labels, in tree order (the root at least)."""
        out: list[RouteTarget] = []
        self._walk(self.root, self._base, labels, out)
        return out

    def _walk(
        self,
        route: Route,
        resolved: _Resolved,
        labels: Mapping[str, str],
        out: list[RouteTarget],
    ) -> bool:
        if not matches_all(route.matchers, labels):
            return False
        matched_child = False
        for child in route.routes:
            if self._walk(child, self._inherit(resolved, child), labels, out):
                matched_child = True
                if not child.continue_:
                    break
        if not matched_child:
            out.append(self._target(route, resolved, labels))
        return True

    def _target(self, route: Route, r: _Resolved, labels: Mapping[str, str]) -> RouteTarget:
        receiver = r.receiver
        if r.receiver_from is not None:
            contact = self._contact(r.receiver_from, labels)
            if contact is not None and contact in self.receivers:
                receiver = contact
            elif contact is not None and (route.key, contact) not in self._warned:
                self._warned.add((route.key, contact))
                log.warning(
                    "the catalog names a receiver that the notification config lacks; "
                    "using the route's receiver",
                    extra={"contact": contact, "route": route.key, "fallback": receiver},
                )
        assert receiver is not None  # the root has one, so every route inherits one
        return RouteTarget(
            route_key=route.key,
            receiver=receiver,
            group_by=r.group_by,
            group_wait=r.group_wait,
            group_interval=r.group_interval,
            repeat_interval=r.repeat_interval,
        )

    def _contact(self, fieldname: str, labels: Mapping[str, str]) -> str | None:
        if labels.get(fieldname):
            return labels[fieldname]
        agent = labels.get("agent_id")
        if agent and self.contact_lookup is not None:
            return self.contact_lookup(agent, fieldname)
        return None


def catalog_contacts(catalog: Catalog) -> ContactLookup:
    """The catalog's ``owner`` and ``oncall`` of an agent, as receiver names for routing."""

    def lookup(agent_id: str, fieldname: str) -> str | None:
        entry = catalog.get(agent_id)
        if entry is None or fieldname not in CONTACT_FIELDS:
            return None
        value: str = getattr(entry, fieldname)
        return value or None

    return lookup
