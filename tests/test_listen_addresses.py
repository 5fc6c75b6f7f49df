"""Every server agentwatch starts listens on loopback unless told to listen wider."""

from __future__ import annotations

import pytest

from agentwatch.cli import build_parser
from agentwatch.settings import Settings


@pytest.mark.parametrize(
    "argv",
    [
        ["process", "--metrics-port", "9464"],
        ["alerts", "run", "--metrics-port", "9466"],
        ["drift", "run", "--metrics-port", "9465"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_metrics_listen_on_loopback_by_default(argv: list[str]) -> None:
    args = build_parser(Settings()).parse_args(argv)
    assert args.metrics_host == "127.0.0.1"


def test_the_webhook_receiver_listens_on_loopback_by_default() -> None:
    assert build_parser(Settings()).parse_args(["alerts", "receive"]).host == "127.0.0.1"
