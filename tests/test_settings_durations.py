"""Duration settings read the one duration grammar, in the file and the environment alike,
and a number of seconds; a value that is neither names the file and key, or the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.settings import ConfigError, Settings, env_name, load_settings

# Every setting that is a duration, held in seconds.
SECONDS: list[tuple[str, str]] = [
    ("kafka", "timeout"),
    ("storage", "maintain_interval"),
    ("storage", "snapshot_grace"),
    ("process", "idle_timeout"),
    ("process", "flush_interval"),
    ("process", "dedup_horizon"),
    ("process", "session_timeout"),
    ("process", "allowed_lateness"),
    ("process", "connect_timeout"),
    ("simulate", "duration"),
    ("broker", "start_timeout"),
    ("broker", "stop_timeout"),
    ("alerts", "interval"),
    ("receive", "read_timeout"),
    ("receive", "request_timeout"),
    ("drift", "interval"),
    ("demo", "seconds"),
]
# Every setting that is a duration a flag reads as text: held as its shortest spelling.
TEXT: list[tuple[str, str]] = [("breaker", "cooldown"), ("dashboards", "range")]
NOT_ONE = "not a duration: '5x' (use e.g. 500ms, 30s, 5m, 1h30m, 2d or 1w)"


def from_file(tmp_path: Path, section: str, key: str, value: str) -> object:
    path = tmp_path / "agentwatch.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    return load_settings(str(path)).value(section, key)


@pytest.mark.parametrize(("section", "key"), SECONDS)
@pytest.mark.parametrize(("value", "seconds"), [("'500ms'", 0.5), ("'2m'", 120.0), ("90", 90.0)])
def test_a_duration_setting_in_the_file_takes_a_duration_or_seconds(
    tmp_path: Path, section: str, key: str, value: str, seconds: float
) -> None:
    assert from_file(tmp_path, section, key, value) == seconds


@pytest.mark.parametrize(("section", "key"), SECONDS)
@pytest.mark.parametrize(("value", "seconds"), [("500ms", 0.5), ("2m", 120.0), ("90", 90.0)])
def test_a_duration_setting_in_the_environment_takes_a_duration_or_seconds(
    monkeypatch: pytest.MonkeyPatch, section: str, key: str, value: str, seconds: float
) -> None:
    monkeypatch.setenv(env_name(section, key), value)
    assert Settings().value(section, key) == seconds


@pytest.mark.parametrize(("section", "key"), SECONDS + TEXT)
def test_a_duration_setting_in_the_file_refuses_what_is_no_duration_naming_the_file_and_key(
    tmp_path: Path, section: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        from_file(tmp_path, section, key, "'5x'")
    assert str(caught.value) == f"{tmp_path / 'agentwatch.toml'}: [{section}] {key}: {NOT_ONE}"


@pytest.mark.parametrize(("section", "key"), SECONDS + TEXT)
def test_a_duration_setting_in_the_environment_refuses_what_is_no_duration_naming_it(
    monkeypatch: pytest.MonkeyPatch, section: str, key: str
) -> None:
    monkeypatch.setenv(env_name(section, key), "5x")
    with pytest.raises(ConfigError) as caught:
        Settings().value(section, key)
    assert str(caught.value) == f"{env_name(section, key)}='5x': {NOT_ONE}"


@pytest.mark.parametrize(("section", "key"), TEXT)
@pytest.mark.parametrize(
    ("value", "spelled"), [("'500ms'", "500ms"), ("'90m'", "1h30m"), ("90", "1m30s")]
)
def test_a_duration_a_flag_reads_as_text_is_held_as_its_shortest_spelling(
    tmp_path: Path, section: str, key: str, value: str, spelled: str
) -> None:
    assert from_file(tmp_path, section, key, value) == spelled


def test_a_duration_setting_keeps_its_range_in_any_spelling(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[process\] session_timeout: Expected `float` > 0.0"):
        from_file(tmp_path, "process", "session_timeout", "'0s'")
