"""Settings: typed sections, defaults written once, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.cli import build_parser, main
from agentwatch.processors.landing.config import ProcessorConfig
from agentwatch.processors.landing.pipeline import LandingSettings
from agentwatch.processors.store.tables import TABLE_SCHEMAS
from agentwatch.settings import DEFAULTS, ConfigError, Settings, load_settings


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentwatch.toml"
    path.write_text(text)
    return path


def test_a_file_value_wins_over_the_default_and_the_environment_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(str(toml(tmp_path, "[process]\nmax_batch = 500\n")))
    assert settings.value("process", "max_batch") == 500
    monkeypatch.setenv("AGENTWATCH_PROCESS_MAX_BATCH", "700")
    assert settings.value("process", "max_batch") == 700
    assert Settings().value("process", "flush_interval") == DEFAULTS.process.flush_interval


def test_a_misspelt_key_names_the_file_the_key_and_the_closest_valid_one(tmp_path: Path) -> None:
    path = toml(tmp_path, "[process]\nmax_bach = 500\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == f"{path}: process.max_bach: unknown key (did you mean max_batch?)"


def test_an_unknown_section_is_refused_with_the_closest_one(tmp_path: Path) -> None:
    path = toml(tmp_path, "[procss]\ngroup = 'g'\n")
    with pytest.raises(ConfigError, match=r"procss: unknown key \(did you mean process\?\)"):
        load_settings(str(path))


def test_a_value_of_the_wrong_type_names_the_section_and_key(tmp_path: Path) -> None:
    path = toml(tmp_path, "[process]\nmax_batch = 'many'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == f"{path}: [process] max_batch: Expected `int`, got `str`"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_batch", "0", "Expected `int` >= 1"),
        ("flush_interval", "-0.5", "Expected `float` >= 0.0"),
        ("session_timeout", "0", "Expected `float` > 0.0"),
        ("dedup_memory_mb", "nan", "Expected `float` > 0.0"),
        ("workers", "-1", "Expected `int` >= 0"),
    ],
)
def test_a_value_out_of_its_range_names_the_section_key_and_bound(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    path = toml(tmp_path, f"[process]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == f"{path}: [process] {key}: {problem}"


def test_an_environment_value_out_of_range_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWATCH_PROCESS_MAX_BATCH", "-3")
    with pytest.raises(
        ConfigError, match=r"AGENTWATCH_PROCESS_MAX_BATCH='-3': Expected `int` >= 1"
    ):
        Settings().value("process", "max_batch")


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_PROCESS_MAX_BATCH", "many")
    with pytest.raises(ConfigError, match="AGENTWATCH_PROCESS_MAX_BATCH='many'"):
        Settings().value("process", "max_batch")


def test_the_command_line_reports_a_bad_config_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = toml(tmp_path, "[kafka]\nbootstrapp = 'x:1'\n")
    assert main(["--config", str(path), "sql", "SELECT 1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"agentwatch: {path}: kafka.bootstrapp: unknown key (did you mean bootstrap?)"


def test_the_processor_defaults_are_the_settings_defaults() -> None:
    config = ProcessorConfig(bootstrap="b", db=Path("d"))
    process = DEFAULTS.process
    assert (config.max_batch, config.flush_interval_s, config.dedup_horizon_s) == (
        process.max_batch,
        process.flush_interval,
        process.dedup_horizon,
    )
    landing = LandingSettings(max_message_bytes=1)
    assert landing.allowed_lateness_s == process.allowed_lateness
    assert landing.dedup_max_ids == process.dedup_max_ids


def test_an_infinite_value_in_the_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = toml(tmp_path, "[kafka]\ntimeout = inf\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == f"{path}: [kafka] timeout: must be a finite number, got inf"


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_an_infinite_environment_value_names_the_variable_and_stops_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("AGENTWATCH_PROCESS_FLUSH_INTERVAL", value)
    assert main(["process", "--bootstrap", "127.0.0.1:1"]) == 2
    problem = "must be a finite number" if value != "-inf" else "Expected `float` >= 0.0"
    assert capsys.readouterr().err.strip() == (
        f"agentwatch: AGENTWATCH_PROCESS_FLUSH_INTERVAL='{value}': {problem}"
    )


def test_a_retention_entry_out_of_range_names_the_file_and_the_table(tmp_path: Path) -> None:
    for days, problem in [("-1", "Expected `int` >= 0"), ("99999999999999999999", "<= 36500")]:
        path = toml(tmp_path, f"[storage]\nretention_days = {{events = {days}}}\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(str(path))
        assert str(caught.value).startswith(f"{path}: [storage] retention_days.events: ")
        assert str(caught.value).endswith(problem)


def test_a_retention_of_an_unknown_table_names_the_file_and_the_closest_table(
    tmp_path: Path,
) -> None:
    path = toml(tmp_path, "[storage]\nretention_days = {evnts = 7}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == (
        f"{path}: storage.retention_days.evnts: unknown key (did you mean events?)"
    )


def test_retention_in_the_file_and_the_environment_changes_only_the_tables_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(str(toml(tmp_path, "[storage]\nretention_days = {events = 7}\n")))
    days = settings.value("storage", "retention_days")
    assert (days["events"], days["minute_rollups"]) == (7, 400)
    monkeypatch.setenv("AGENTWATCH_STORAGE_RETENTION_DAYS", " dead_letters=14, otlp_unmapped=0")
    days = settings.value("storage", "retention_days")
    assert (days["events"], days["dead_letters"], days["otlp_unmapped"]) == (7, 14, 0)
    assert days["minute_rollups"] == DEFAULTS.storage.retention_days["minute_rollups"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("events", "expected KEY=VALUE pairs separated by commas, e.g. "
         "events=30,dead_letters=7; got 'events'"),
        ("evnts=7", "unknown key 'evnts' (did you mean events?)"),
        ("events=99999999999999999999", "Expected `int` <= 36500"),
        ("events=soon", "Expected `int`, got `str`"),
    ],
)  # fmt: skip
def test_a_bad_retention_environment_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    monkeypatch.setenv("AGENTWATCH_STORAGE_RETENTION_DAYS", value)
    assert main(["store", "maintain"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"agentwatch: AGENTWATCH_STORAGE_RETENTION_DAYS='{value}': {problem}"


def test_legal_hold_in_the_environment_is_a_comma_list_of_agents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWATCH_STORAGE_LEGAL_HOLD", "hr-assistant-1, finance-2,")
    assert Settings().value("storage", "legal_hold") == ["hr-assistant-1", "finance-2"]
    args = build_parser(Settings()).parse_args(["store", "maintain", "--legal-hold", "it-3"])
    assert args.legal_hold == ["hr-assistant-1", "finance-2", "it-3"]


def test_the_settings_know_every_stored_table_so_retention_can_name_any() -> None:
    assert set(DEFAULTS.storage.retention_days) == set(TABLE_SCHEMAS)


def test_a_config_file_saved_with_a_byte_order_mark_says_so(tmp_path: Path) -> None:
    path = tmp_path / "agentwatch.toml"
    path.write_bytes(b"\xef\xbb\xbf[process]\nmax_batch = 100\n")
    with pytest.raises(ConfigError, match=r"starts with a byte order mark: save it as UTF-8"):
        load_settings(str(path))


def test_an_empty_config_path_is_refused_not_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "", "sql", "SELECT 1"]) == 2
    assert capsys.readouterr().err == "agentwatch: --config names no file (an empty path)\n"
