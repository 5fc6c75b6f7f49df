"""One /metrics for the workers: their expositions merged, never going backwards."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.processors.landing.metrics_merge import Families, MergedMetrics, parse


def exposition(events: float, lag: float, partition: str) -> str:
    return (
        "# HELP agentwatch_events Trace events landed.\n"
        "# TYPE agentwatch_events counter\n"
        f'agentwatch_events_total{{agent_id="a"}} {events}\n'
        "# HELP agentwatch_pipeline_consumer_lag Records not yet consumed.\n"
        "# TYPE agentwatch_pipeline_consumer_lag gauge\n"
        f'agentwatch_pipeline_consumer_lag{{partition="{partition}"}} {lag}\n'
    )


class Workers(MergedMetrics):
    """Expositions served from memory instead of loopback ports."""

    def __init__(self, texts: dict[int, str | None]) -> None:
        super().__init__(list(texts))
        self.texts = texts

    def _scrape(self, port: int) -> Families | None:
        text = self.texts[port]
        return None if text is None else parse(text)


def scraped(collector: MergedMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


EVENTS = ("agentwatch_events_total", (("agent_id", "a"),))


def test_counters_of_the_workers_are_summed_and_partition_gauges_kept_apart() -> None:
    workers = Workers({1: exposition(10, 5, "0"), 2: exposition(7, 3, "1")})
    samples = scraped(workers)
    assert samples[EVENTS] == 17
    assert samples[("agentwatch_pipeline_consumer_lag", (("partition", "0"),))] == 5
    assert samples[("agentwatch_pipeline_consumer_lag", (("partition", "1"),))] == 3


def test_a_restarted_worker_does_not_take_the_merged_counters_backwards() -> None:
    workers = Workers({1: exposition(10, 5, "0"), 2: exposition(7, 3, "1")})
    assert scraped(workers)[EVENTS] == 17
    workers.retire(2)
    workers.texts[2] = exposition(1, 0, "1")  # the new worker counts from zero
    assert scraped(workers)[EVENTS] == 18


def test_a_worker_that_does_not_answer_keeps_its_last_values() -> None:
    workers = Workers({1: exposition(10, 5, "0"), 2: exposition(7, 3, "1")})
    scraped(workers)
    workers.texts[2] = None
    assert scraped(workers)[EVENTS] == 17
