"""The throughput benchmark's ceiling: members that only fetch, or fetch and decode."""

from __future__ import annotations

import pytest

from agentwatch.broker.launcher import BrokerInfo
from bench.ceiling import Pass, ceiling
from tests.conftest import TopicFactory
from tests.pipeline_helpers import make_events, produce


@pytest.mark.parametrize("what", ["fetch", "decode"])
def test_the_ceiling_reads_every_partition_to_its_end_once_over_the_processes(
    kafka_broker: BrokerInfo, topic: TopicFactory, what: Pass
) -> None:
    name = topic(partitions=3)
    produce(kafka_broker.bootstrap, name, make_events(3_000))
    reading = ceiling(kafka_broker.bootstrap, name, partitions=3, workers=2, what=what)
    assert reading.records == 3_000
    assert reading.events == (3_000 if what == "decode" else 0)
    assert reading.events_per_s > 0
    assert reading.cpu_us_per_event > 0
