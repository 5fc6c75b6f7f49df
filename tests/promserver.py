"""A real Prometheus server (the Debian package) on a loopback port, for tests."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentwatch.broker.ports import free_port


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (raises on a PromQL error)."""
        qs = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        """The single value of a query that must return exactly one series."""
        result = self.query(promql)
        assert len(result) == 1, f"{promql}: {result}"
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, expected: float, timeout: float = 60.0) -> float:
        """Wait until a one-series query returns ``expected`` (scrapes are periodic)."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) == 1:
                last = float(result[0]["value"][1])
                if abs(last - expected) <= 1e-6 * max(1.0, abs(expected)):
                    return last
            time.sleep(0.25)
        raise AssertionError(f"{promql} = {last}, expected {expected}")


@contextmanager
def running_prometheus(
    binary: str, workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``targets`` every second; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in rule_files],
                "scrape_configs": [
                    {"job_name": "agentwatch", "static_configs": [{"targets": list(targets)}]}
                ],
            }
        )
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError((workdir / "prometheus.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus did not become ready")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
