"""The notification config file: typed blocks, and errors naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.alerts.notify.config import load_notify_config, parse_notify_config
from agentwatch.settings import ConfigError


@pytest.mark.parametrize(
    ("global_block", "message"),
    [
        ("{retry: {attempts: abc}}", "global.retry.attempts: Expected `int`, got `str`"),
        ("{retry: {attemps: 3}}", "global.retry.attemps: unknown key (did you mean attempts?)"),
        ("{http_timeout: soon}", "global.http_timeout: not a duration: 'soon'"),
    ],
)
def test_a_bad_global_setting_names_its_key_path_and_the_problem(
    tmp_path: Path, global_block: str, message: str
) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(f"global: {global_block}\nroute: {{receiver: r}}\nreceivers: [{{name: r}}]\n")
    with pytest.raises(ConfigError) as caught:
        load_notify_config(path, tmp_path)
    assert str(caught.value).startswith(f"notification config {path}: {message}")


def test_a_misspelt_top_level_key_names_the_closest_one() -> None:
    doc = {"route": {"receiver": "r"}, "receivers": [{"name": "r"}], "inhibit_rule": []}
    with pytest.raises(ValueError, match=r"inhibit_rule: unknown key \(did you mean inhibit_rules"):
        parse_notify_config(doc, Path("."))


@pytest.mark.parametrize(
    ("kind", "secret"),
    [
        ("webhook_configs", "url"),
        ("slack_configs", "api_url"),
        ("pagerduty_configs", "routing_key"),
    ],
)
def test_a_receiver_without_its_secret_or_with_an_empty_secret_file_is_refused(
    tmp_path: Path, kind: str, secret: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    for config in ({}, {f"{secret}_file": "empty"}):
        doc = {"route": {"receiver": "r"}, "receivers": [{"name": "r", kind: [config]}]}
        with pytest.raises(ValueError, match=rf"\[0\]: needs {secret} or {secret}_file"):
            parse_notify_config(doc, tmp_path, tmp_path)
