"""Drift settings: built-in ``drift.yaml`` defaults, with a user file merged over them.

Thresholds and minimum samples are resolved per agent and signal, most specific first:
an agent pattern's signal entry, the agent pattern's own entry, the signal's entry, the
defaults. So an owner can loosen one noisy signal of one agent without touching the rest.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import msgspec

from agentwatch.decoding import did_you_mean
from agentwatch.durations import DurationError, format_duration, parse_duration
from agentwatch.processors.drift import stats
from agentwatch.processors.drift.stats import Kind
from agentwatch.settings import ConfigError
from agentwatch.yamlfile import read_yaml

BUILTIN: Final = Path(__file__).with_name("drift.yaml")
DIMENSIONS: Final = ("agent_version", "prompt_version", "model")
KINDS: Final[tuple[Kind, ...]] = ("numeric", "categorical", "rate")
_TOP_KEYS: Final = {
    "grain", "window", "reference", "min_reference", "settle", "session_lookback", "release",
    "large_sample", "min_expected", "tests", "thresholds", "min_samples", "signals", "agents",
    "max_window", "seasonality", "fdr", "cumulative",
}  # fmt: skip
_OVERRIDE_KEYS: Final = {"thresholds", "min_samples", "enabled"}
_AGENT_WINDOW_KEYS: Final = {"window", "max_window"}
FDR_FAMILIES: Final = ("window", "agent", "hierarchical")
SEASONALITY_MODES: Final = ("auto", "off")
_DAY: Final = dt.timedelta(days=1)
# The longest each duration may be, by key (an agent entry's as the top level's). An
# evaluation reads every bucket from the reference's start (or the release window's
# history) to the window end, so these bound its work as well as catch `window: 100y`.
LONGEST: Final = {
    "grain": _DAY,  # a bucket: a daily cycle needs several buckets a day
    "window": 7 * _DAY,  # the current window: hours, a week for a slow agent
    "max_window": 7 * _DAY,  # the same window, grown for a quiet agent
    "cumulative.horizon": 7 * _DAY,  # the last buckets whose deviations add up
    "reference": 90 * _DAY,  # the trailing baseline: a quarter at most
    "min_reference": 90 * _DAY,  # and no longer than `reference`
    "release.window": 30 * _DAY,  # a canary or a rollout: a month
    "release.min_history": 30 * _DAY,
    "seasonality.periods": 30 * _DAY,  # daily, weekly, monthly cycles
    "settle": _DAY,  # for late events: drift that waits longer is no monitor
    "session_lookback": _DAY,  # read again before each day of buckets loaded
}


def _span(value: object, source: str, key: str) -> dt.timedelta:
    """A duration setting up to its ``LONGEST``, or an error naming the file and key."""
    try:
        span = parse_duration(value)
    except DurationError as exc:
        raise ConfigError(f"{source}: {key}: {exc}") from None
    longest = LONGEST[key.rpartition(".")[2] if key.startswith("agents.") else key]
    if span > longest:
        raise ConfigError(f"{source}: {key}: must be at most {longest.days}d, got {value}")
    return span


def _multiple(value: object, source: str, key: str, grain: dt.timedelta) -> dt.timedelta:
    """A window setting: a positive multiple of grain, up to its ``LONGEST``."""
    span = _span(value, source, key)
    if span <= dt.timedelta(0) or span.total_seconds() % grain.total_seconds():
        raise ConfigError(
            f"{source}: {key} ({format_duration(span)}) must be a positive multiple "
            f"of grain ({format_duration(grain)})"
        )
    return span


class _Shape(msgspec.Struct):
    """The types of a drift file's values (durations are checked by :func:`_span`)."""


class _OverrideShape(_Shape):
    thresholds: dict[str, Any] | None = None  # each entry checked by _thresholds
    min_samples: dict[str, Any] | None = None
    enabled: bool | None = None
    signals: dict[str, Any] | None = None


class _ReleaseShape(_Shape, forbid_unknown_fields=True):
    window: Any = None
    min_history: Any = None
    dimensions: list[str] | None = None


class _ChoiceShape(_Shape, forbid_unknown_fields=True):
    small: str
    large: str
    always: list[str] = []


class _TestsShape(_Shape, forbid_unknown_fields=True):
    numeric: _ChoiceShape
    categorical: _ChoiceShape
    rate: _ChoiceShape


class _SeasonalityShape(_Shape):
    mode: str = "auto"
    periods: list[Any] = []
    min_cycles: int = 2
    p_value: float = 0.001


class _CumulativeShape(_Shape):
    tests: dict[str, str] | None = None


class _FileShape(_Shape):
    release: _ReleaseShape | None = None
    large_sample: int = 1
    min_expected: float = 0.0
    tests: _TestsShape | None = None
    thresholds: dict[str, Any] = {}
    min_samples: dict[str, Any] = {}
    signals: dict[str, Any] | None = None
    agents: dict[str, Any] | None = None
    seasonality: _SeasonalityShape | None = None
    fdr: str = "agent"
    cumulative: _CumulativeShape | None = None


def _check_shape(value: Any, shape: type[_Shape], source: str, where: str = "") -> None:
    """Each value of the right type, or one line naming the file and the key path."""
    try:
        msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        problem, _, path = str(exc).partition(" - at `$")
        path = f"{where}{path.rstrip('`')}".removeprefix(".")
        raise ConfigError(f"{source}: {path or 'top level'}: {problem}") from None


def _test_name(name: object, source: str, where: str) -> str:
    """A registered test's name, or one line naming the key and the closest test."""
    if str(name) not in stats.TESTS:
        hint = did_you_mean([name], stats.TESTS) or f" (known: {', '.join(stats.TESTS)})"
        raise ConfigError(f"{source}: {where}: unknown drift test {name!r}{hint}")
    return str(name)


def _thresholds(raw: Mapping[str, Any], source: str, where: str) -> dict[str, float]:
    """Thresholds by test: a p-valued test's (an FDR level) in (0, 1), a distance's > 0."""
    out: dict[str, float] = {}
    for name, value in raw.items():
        test = stats.TESTS[_test_name(name, source, f"{where}.{name}")]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {where}.{name}: must be a number, got {value!r}")
        level = float(value)
        if not 0.0 < level < (1.0 if test.p_valued else math.inf):
            what = "a p-value level in (0, 1)" if test.p_valued else "a finite distance above 0"
            raise ConfigError(f"{source}: {where}.{name}: must be {what}, got {value!r}")
        out[str(name)] = level
    return out


def _min_samples(raw: Mapping[str, Any], source: str, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in raw.items():
        _test_name(name, source, f"{where}.{name}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{source}: {where}.{name}: must be a whole number of at least 1, got {value!r}"
            )
        out[str(name)] = int(value)
    return out


@dataclass(frozen=True)
class TestChoice:
    """Which registered test a kind of signal uses below and above ``large_sample``."""

    small: str
    large: str
    always: tuple[str, ...] = ()


@dataclass(frozen=True)
class Override:
    thresholds: Mapping[str, float] = field(default_factory=dict)
    min_samples: Mapping[str, int] = field(default_factory=dict)
    enabled: bool | None = None


@dataclass(frozen=True)
class AgentOverride:
    pattern: str
    own: Override
    signals: Mapping[str, Override]
    window: dt.timedelta | None = None
    max_window: dt.timedelta | None = None


@dataclass(frozen=True)
class Seasonality:
    """When a signal follows the clock, its reference is the same time of earlier cycles.

    ``mode`` auto tests each agent's signal for a cycle of each ``periods`` length (longest
    first) over the reference; ``off`` always compares with the whole trailing reference.
    """

    mode: str = "auto"
    periods: tuple[dt.timedelta, ...] = (dt.timedelta(days=7), dt.timedelta(days=1))
    min_cycles: int = 2
    p_value: float = 0.001


@dataclass(frozen=True)
class Cumulative:
    """A cumulative test per signal beside the windowed ones, for drift that builds up.

    The test sums each bucket's deviation from its baseline over the last buckets, up
    to ``horizon``; ``tests`` names the test of each kind (a kind left out gets none).
    """

    horizon: dt.timedelta = dt.timedelta(hours=12)
    tests: Mapping[Kind, str] = field(
        default_factory=lambda: cast(dict[Kind, str], {"numeric": "cusum", "rate": "cusum_rate"})
    )


@dataclass(frozen=True)
class DriftConfig:
    grain: dt.timedelta
    window: dt.timedelta
    reference: dt.timedelta
    min_reference: dt.timedelta
    settle: dt.timedelta
    session_lookback: dt.timedelta
    release_window: dt.timedelta
    release_dimensions: tuple[str, ...]
    release_min_history: dt.timedelta
    large_sample: int
    min_expected: float
    tests: Mapping[Kind, TestChoice]
    thresholds: Mapping[str, float]
    min_samples: Mapping[str, int]
    signals: Mapping[str, Override]
    agents: tuple[AgentOverride, ...]
    source: str = "built-in"
    max_window: dt.timedelta = dt.timedelta(hours=12)
    seasonality: Seasonality = Seasonality()
    fdr: str = "agent"
    cumulative: Cumulative = Cumulative()

    @property
    def grain_s(self) -> int:
        return int(self.grain.total_seconds())

    def _layers(self, agent_id: str, signal: str) -> list[Override]:
        """Overrides from most to least specific."""
        layers: list[Override] = []
        for agent in self.agents:
            if fnmatch.fnmatchcase(agent_id, agent.pattern):
                if signal in agent.signals:
                    layers.append(agent.signals[signal])
                layers.append(agent.own)
                break
        if signal in self.signals:
            layers.append(self.signals[signal])
        return layers

    def threshold(self, agent_id: str, signal: str, test: str) -> float:
        for layer in self._layers(agent_id, signal):
            if test in layer.thresholds:
                return layer.thresholds[test]
        return self.thresholds[test]

    def min_sample(self, agent_id: str, signal: str, test: str) -> int:
        for layer in self._layers(agent_id, signal):
            if test in layer.min_samples:
                return layer.min_samples[test]
        return self.min_samples[test]

    def enabled(self, agent_id: str, signal: str) -> bool:
        for layer in self._layers(agent_id, signal):
            if layer.enabled is not None:
                return layer.enabled
        return True

    def windows_for(self, agent_id: str) -> tuple[dt.timedelta, dt.timedelta]:
        """The agent's current window and the longest a quiet agent's window may grow to."""
        for agent in self.agents:
            if fnmatch.fnmatchcase(agent_id, agent.pattern):
                window = agent.window or self.window
                return window, max(window, agent.max_window or self.max_window)
        return self.window, max(self.window, self.max_window)

    def tests_for(self, kind: Kind) -> TestChoice:
        return self.tests[kind]


def load_config(path: Path | None = None) -> DriftConfig:
    """The built-in settings, with ``path`` (YAML) merged over them when given."""
    data = _read(BUILTIN)
    source = "built-in"
    if path is not None:
        if not path.exists():
            raise ConfigError(f"drift config {path} does not exist")
        data = _merge(data, _read(path))
        source = str(path)
    try:
        return _build(data, source)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_from_mapping(overrides: Mapping[str, Any]) -> DriftConfig:
    """The built-in settings with ``overrides`` merged over them (tests, the bench)."""
    return _build(_merge(_read(BUILTIN), overrides), "built-in+overrides")


def _read(path: Path) -> dict[str, Any]:
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(data: Mapping[str, Any], source: str) -> DriftConfig:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        hint = did_you_mean(sorted(unknown), _TOP_KEYS)
        raise ConfigError(f"{source}: unknown drift settings {sorted(unknown)}{hint}")
    _check_shape(data, _FileShape, source)
    grain = _span(data["grain"], source, "grain")
    if grain < dt.timedelta(minutes=1) or grain.total_seconds() % 60:
        raise ConfigError(f"{source}: grain must be whole minutes, at least 1m")
    durations = {k: _span(data[k], source, k) for k in ("settle", "session_lookback")}
    for k in ("window", "reference", "min_reference"):
        durations[k] = _multiple(data[k], source, k, grain)
    if durations["min_reference"] > durations["reference"]:
        raise ConfigError(
            f"{source}: min_reference: must be at most reference "
            f"({format_duration(durations['reference'])}), got {data['min_reference']}"
        )
    release = data.get("release") or {}
    release_window = _multiple(release.get("window", "24h"), source, "release.window", grain)
    dimensions = tuple(release.get("dimensions", DIMENSIONS))
    min_history = _multiple(release.get("min_history", "6h"), source, "release.min_history", grain)
    for dim in dimensions:
        if dim not in DIMENSIONS:
            raise ConfigError(f"{source}: release dimension {dim!r} is not one of {DIMENSIONS}")
    tests: dict[Kind, TestChoice] = {}
    for kind in KINDS:
        raw = data["tests"][kind]
        choice = TestChoice(raw["small"], raw["large"], tuple(raw.get("always", ())))
        for name in (choice.small, choice.large, *choice.always):
            _test_name(name, source, f"tests.{kind}")
            if stats.get(name).kind != kind:
                raise ConfigError(f"{source}: test {name!r} is not a {kind} test")
            if stats.get(name).steps:
                raise ConfigError(f"{source}: test {name!r} is cumulative: set it in cumulative")
        tests[kind] = choice
    thresholds = _thresholds(data["thresholds"], source, "thresholds")
    min_samples = _min_samples(data["min_samples"], source, "min_samples")
    for name in stats.TESTS:
        if name not in thresholds or name not in min_samples:
            raise ConfigError(f"{source}: test {name!r} needs a threshold and min_samples")
    for pattern, entry in (data.get("agents") or {}).items():
        if not isinstance(entry, Mapping | None):
            raise ConfigError(f"{source}: agents.{pattern}: must be a mapping, got {entry!r}")
    agents = tuple(
        AgentOverride(
            str(pattern),
            _override(
                {k: v for k, v in (entry or {}).items() if k not in _AGENT_WINDOW_KEYS},
                source,
                f"agents.{pattern}",
                allow_signals=True,
            ),
            {
                str(sig): _override(v or {}, source, f"agents.{pattern}.signals.{sig}")
                for sig, v in ((entry or {}).get("signals") or {}).items()
            },
            *(
                _window((entry or {}).get(key), f"agents.{pattern}.{key}", grain, source)
                for key in ("window", "max_window")
            ),
        )
        for pattern, entry in (data.get("agents") or {}).items()
    )
    max_window = _multiple(data.get("max_window", "12h"), source, "max_window", grain)
    fdr = str(data.get("fdr", "agent"))
    if fdr not in FDR_FAMILIES:
        raise ConfigError(f"{source}: fdr must be one of {', '.join(FDR_FAMILIES)}, got {fdr!r}")
    signals = {
        str(sig): _override(v or {}, source, f"signals.{sig}")
        for sig, v in (data.get("signals") or {}).items()
    }
    return DriftConfig(
        grain=grain,
        window=durations["window"],
        reference=durations["reference"],
        min_reference=durations["min_reference"],
        settle=durations["settle"],
        session_lookback=durations["session_lookback"],
        release_window=release_window,
        release_dimensions=dimensions,
        release_min_history=min_history,
        large_sample=int(_at_least(data["large_sample"], 1, source, "large_sample")),
        min_expected=float(_at_least(data["min_expected"], 0, source, "min_expected")),
        tests=tests,
        thresholds=thresholds,
        min_samples=min_samples,
        signals=signals,
        agents=agents,
        source=source,
        max_window=max_window,
        seasonality=_seasonality(data.get("seasonality") or {}, grain, source),
        fdr=fdr,
        cumulative=_cumulative(data.get("cumulative") or {}, grain, source),
    )


def _at_least(value: float, floor: int, source: str, key: str) -> float:
    if not floor <= value < math.inf:
        raise ConfigError(f"{source}: {key}: must be a finite number >= {floor}, got {value!r}")
    return value


def _window(value: Any, where: str, grain: dt.timedelta, source: str) -> dt.timedelta | None:
    return None if value is None else _multiple(value, source, where, grain)


def _seasonality(entry: Mapping[str, Any], grain: dt.timedelta, source: str) -> Seasonality:
    unknown = set(entry) - {"mode", "periods", "min_cycles", "p_value"}
    if unknown:
        raise ConfigError(f"{source}: unknown seasonality settings {sorted(unknown)}")
    default = Seasonality()
    mode = str(entry.get("mode", default.mode))
    if mode not in SEASONALITY_MODES:
        raise ConfigError(f"{source}: seasonality.mode must be auto or off, got {mode!r}")
    found = [_multiple(p, source, "seasonality.periods", grain) for p in entry.get("periods", ())]
    periods = tuple(sorted(found, reverse=True)) or default.periods
    min_cycles = int(entry.get("min_cycles", default.min_cycles))
    p_value = float(entry.get("p_value", default.p_value))
    if min_cycles < 2 or not 0.0 < p_value < 1.0:
        raise ConfigError(f"{source}: seasonality needs min_cycles >= 2 and 0 < p_value < 1")
    return Seasonality(mode, periods, min_cycles, p_value)


def _cumulative(entry: Mapping[str, Any], grain: dt.timedelta, source: str) -> Cumulative:
    unknown = set(entry) - {"horizon", "tests"}
    if unknown:
        hint = did_you_mean(sorted(unknown), {"horizon", "tests"})
        raise ConfigError(f"{source}: unknown cumulative settings {sorted(unknown)}{hint}")
    default = Cumulative()
    horizon = _multiple(entry.get("horizon", "12h"), source, "cumulative.horizon", grain)
    raw = entry.get("tests", default.tests) or {}
    tests: dict[Kind, str] = {}
    for kind, name in raw.items():
        if kind not in ("numeric", "rate"):
            raise ConfigError(f"{source}: cumulative.tests: {kind!r} is not numeric or rate")
        test = stats.get(_test_name(name, source, f"cumulative.tests.{kind}"))
        if test.kind != kind or not test.steps:
            raise ConfigError(f"{source}: cumulative.tests: {name!r} is no cumulative {kind} test")
        tests[cast(Kind, kind)] = str(name)
    return Cumulative(horizon, tests)


def _override(entry: Any, source: str, where: str, allow_signals: bool = False) -> Override:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{source}: {where}: must be a mapping, got {entry!r}")
    allowed = _OVERRIDE_KEYS | ({"signals"} if allow_signals else set())
    unknown = set(entry) - allowed
    if unknown:
        hint = did_you_mean(sorted(unknown), allowed)
        raise ConfigError(f"{source}: {where}: unknown settings {sorted(unknown)}{hint}")
    _check_shape(entry, _OverrideShape, source, f".{where}")
    enabled = entry.get("enabled")
    return Override(
        thresholds=_thresholds(entry.get("thresholds") or {}, source, f"{where}.thresholds"),
        min_samples=_min_samples(entry.get("min_samples") or {}, source, f"{where}.min_samples"),
        enabled=None if enabled is None else bool(cast(bool, enabled)),
    )
