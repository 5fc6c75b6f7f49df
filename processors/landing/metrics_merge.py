"""One ``/metrics`` for the workers of ``agentwatch process --workers N``.

Prometheus' multiprocess mode covers only prometheus_client's own metric objects, not the
collectors the processor renders its batch aggregates with, so each worker serves its
own exposition on a loopback port and this collector merges them on every scrape:
counters and histograms are summed over workers, gauges (per partition, so each
partition has one owner) take the largest value. A worker that crashes restarts from
zero, so its last scraped counters are kept (``retire``) and added from then on: the
merged counters never go backwards, and what a worker counted after its last scrape
before a crash is the only thing lost.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0
Key = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels


class _Family:
    def __init__(self, name: str, documentation: str, typ: str) -> None:
        self.name, self.documentation, self.type = name, documentation, typ
        self.samples: dict[Key, float] = {}

    def add(self, key: Key, value: float) -> None:
        old = self.samples.get(key)
        if old is None:
            self.samples[key] = value
        elif key[0].endswith("_created"):
            self.samples[key] = min(old, value)
        elif self.type == "gauge":
            self.samples[key] = max(old, value)
        else:
            self.samples[key] = old + value


Families = dict[str, _Family]


class MergedMetrics(Collector):
    """The workers' expositions, fetched and merged on each collect."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.last: dict[int, Families] = {}
        self.retired: Families = {}

    def retire(self, port: int) -> None:
        """Keep a crashed worker's last counts: its replacement starts again from zero."""
        for name, family in self.last.pop(port, {}).items():
            if family.type == "gauge":
                continue
            kept = self.retired.setdefault(name, _Family(name, family.documentation, family.type))
            for key, value in family.samples.items():
                kept.add(key, value)

    def collect(self) -> Iterator[Metric]:
        merged: Families = {}
        for port in self.ports:
            families = self._scrape(port)
            if families is not None:
                self.last[port] = families
            _merge_into(merged, self.last.get(port, {}))
        _merge_into(merged, self.retired)
        for family in merged.values():
            metric = Metric(family.name, family.documentation, family.type)
            for (sample, labels), value in family.samples.items():
                metric.add_sample(sample, dict(labels), value)
            yield metric

    def _scrape(self, port: int) -> Families | None:
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                text = response.read().decode()
        except OSError as exc:  # starting, restarting or stopping: its last values stand
            log.debug("worker /metrics unreachable", extra={"port": port, "error": repr(exc)})
            return None
        return parse(text)


def parse(text: str) -> Families:
    families: Families = {}
    for parsed in text_string_to_metric_families(text):
        family = families.setdefault(
            parsed.name, _Family(parsed.name, parsed.documentation, parsed.type)
        )
        for sample in parsed.samples:
            family.add((sample.name, tuple(sorted(sample.labels.items()))), sample.value)
    return families


def _merge_into(merged: Families, families: Families) -> None:
    for name, family in families.items():
        target = merged.setdefault(name, _Family(name, family.documentation, family.type))
        for key, value in family.samples.items():
            target.add(key, value)
