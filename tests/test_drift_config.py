"""The drift settings file: each bad value is one line naming the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.processors.drift.config import load_config
from agentwatch.settings import ConfigError


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text(text)
    load_config(path)


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'drift.yaml'}: ") and "\n" not in message
    return message


def test_a_release_that_is_not_a_mapping_is_refused_naming_release(tmp_path: Path) -> None:
    assert "release: Expected `object | null`, got `int`" in _refused(tmp_path, "release: 5\n")


def test_a_negative_p_value_threshold_is_refused(tmp_path: Path) -> None:
    assert "thresholds.ks: must be a p-value level in (0, 1), got -1" in _refused(
        tmp_path, "thresholds: {ks: -1}\n"
    )


def test_a_nan_threshold_is_refused(tmp_path: Path) -> None:
    assert "thresholds.ks: must be a p-value level" in _refused(
        tmp_path, "thresholds: {ks: .nan}\n"
    )


def test_a_p_value_threshold_of_one_or_more_is_refused(tmp_path: Path) -> None:
    assert "thresholds.chi2:" in _refused(tmp_path, "thresholds: {chi2: 1}\n")


def test_a_distance_threshold_that_is_zero_or_infinite_is_refused(tmp_path: Path) -> None:
    assert "thresholds.psi: must be a finite distance above 0" in _refused(
        tmp_path, "thresholds: {psi: 0}\n"
    )
    assert "thresholds.wasserstein:" in _refused(tmp_path, "thresholds: {wasserstein: .inf}\n")


def test_a_distance_threshold_above_one_is_accepted(tmp_path: Path) -> None:
    _load(tmp_path, "thresholds: {wasserstein: 1.5}\n")


def test_a_min_samples_below_one_is_refused(tmp_path: Path) -> None:
    assert "min_samples.ks: must be a whole number of at least 1, got -3" in _refused(
        tmp_path, "min_samples: {ks: -3}\n"
    )


def test_a_large_sample_of_zero_is_refused(tmp_path: Path) -> None:
    assert "large_sample: must be a finite number >= 1, got 0" in _refused(
        tmp_path, "large_sample: 0\n"
    )


def test_a_threshold_that_is_not_a_number_names_its_key(tmp_path: Path) -> None:
    assert "thresholds.ks: must be a number, got 'abc'" in _refused(
        tmp_path, "thresholds: {ks: abc}\n"
    )


def test_an_override_threshold_that_is_not_a_number_names_its_key_path(tmp_path: Path) -> None:
    text = "agents: {'fin-*': {signals: {latency: {thresholds: {ks: abc}}}}}\n"
    assert "agents.fin-*.signals.latency.thresholds.ks: must be a number" in _refused(
        tmp_path, text
    )


def test_an_unknown_test_name_is_one_line_with_the_closest_test(tmp_path: Path) -> None:
    message = _refused(tmp_path, "signals: {latency: {thresholds: {kss: 0.01}}}\n")
    assert message.endswith(
        "signals.latency.thresholds.kss: unknown drift test 'kss' (did you mean ks?)"
    )


def test_an_unknown_test_name_in_the_defaults_is_refused(tmp_path: Path) -> None:
    assert "min_samples.chi: unknown drift test 'chi'" in _refused(
        tmp_path, "min_samples: {chi: 5}\n"
    )


def test_an_unknown_release_key_is_refused(tmp_path: Path) -> None:
    assert "release: Object contains unknown field `windw`" in _refused(
        tmp_path, "release: {windw: 2h}\n"
    )


def test_the_shipped_settings_and_a_valid_override_file_load(tmp_path: Path) -> None:
    load_config()
    _load(tmp_path, "thresholds: {ks: 0.05, psi: 0.2}\nmin_samples: {ks: 1}\nlarge_sample: 1\n")
