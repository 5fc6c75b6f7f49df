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


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("window: 100y\n", "window: must be at most 7d, got 100y"),
        ("max_window: 8d\n", "max_window: must be at most 7d, got 8d"),
        ("reference: 1y\n", "reference: must be at most 90d, got 1y"),
        ("release: {window: 31d}\n", "release.window: must be at most 30d, got 31d"),
        ("release: {min_history: 60d}\n", "release.min_history: must be at most 30d, got 60d"),
        ("seasonality: {periods: [1d, 365d]}\n", "seasonality.periods: must be at most 30d"),
        ("cumulative: {horizon: 2w}\n", "cumulative.horizon: must be at most 7d, got 2w"),
        ("settle: 2d\n", "settle: must be at most 1d, got 2d"),
        ("session_lookback: 30d\n", "session_lookback: must be at most 1d, got 30d"),
        ("grain: 2d\nwindow: 2d\n", "grain: must be at most 1d, got 2d"),
    ],
)
def test_a_duration_past_its_longest_is_refused_naming_the_key(
    tmp_path: Path, text: str, refusal: str
) -> None:
    assert refusal in _refused(tmp_path, text)


def test_an_agents_window_past_the_longest_is_refused_naming_its_key_path(tmp_path: Path) -> None:
    assert "agents.quiet-*.max_window: must be at most 7d, got 30d" in _refused(
        tmp_path, "agents: {'quiet-*': {max_window: 30d}}\n"
    )


def test_an_agents_window_that_is_not_a_duration_names_its_key_path(tmp_path: Path) -> None:
    assert "agents.quiet-*.window: not a duration: '3 hours'" in _refused(
        tmp_path, "agents: {'quiet-*': {window: 3 hours}}\n"
    )


def test_a_min_reference_longer_than_the_reference_is_refused(tmp_path: Path) -> None:
    assert "min_reference: must be at most reference (3d), got 4d" in _refused(
        tmp_path, "reference: 3d\nmin_reference: 4d\n"
    )


def test_every_duration_at_its_longest_loads(tmp_path: Path) -> None:
    _load(
        tmp_path,
        "grain: 1d\nwindow: 7d\nmax_window: 7d\nreference: 90d\nmin_reference: 90d\n"
        "settle: 1d\nsession_lookback: 1d\nrelease: {window: 30d, min_history: 30d}\n"
        "seasonality: {periods: [30d, 7d]}\ncumulative: {horizon: 7d}\n",
    )
