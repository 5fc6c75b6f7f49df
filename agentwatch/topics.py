"""Explicit topic creation: the broker runs with auto.create.topics.enable=false.

Creating topics up front (with their partition count and config, e.g. compaction) means
a typo in a topic name fails loudly instead of silently creating a one-off topic, and
waiting for every partition to have a leader keeps producers from racing metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentwatch.kafka import KafkaSecurity, client_options

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class TopicError(RuntimeError):
    """A topic could not be created or did not become usable in time."""


class BrokerUnreachable(TopicError):
    """No broker answered at the bootstrap address (wrong address, or Kafka is down)."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to exist: name, partitions and topic-level config such as cleanup.policy."""

    name: str
    partitions: int = 3
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1


def _admin(bootstrap: str, timeout: float, security: KafkaSecurity | None = None) -> Any:
    from kafka.admin import KafkaAdminClient

    ms = max(1000, int(timeout * 1000))
    try:
        return KafkaAdminClient(
            **client_options(bootstrap, security),
            client_id="agentwatch-topics",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
        )
    except Exception as exc:
        raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


def ensure_topics(
    bootstrap: str,
    topics: Sequence[TopicSpec],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    security: KafkaSecurity | None = None,
) -> None:
    """Create the topics that do not exist yet, then wait until all of them are usable.

    Safe to call concurrently from several processes: a topic that another caller
    created first counts as success. An existing topic is never altered.
    """
    if not topics:
        return
    from kafka.errors import TopicAlreadyExistsError, for_code

    admin = _admin(bootstrap, timeout, security)
    try:
        existing = set(admin.list_topics())
        missing = {spec.name: spec for spec in topics if spec.name not in existing}
        if missing:
            request = {
                spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": {key: str(value) for key, value in spec.config.items()},
                }
                for spec in missing.values()
            }
            response = admin.create_topics(
                request, timeout_ms=int(timeout * 1000), raise_errors=False
            )
            for result in response["topics"]:
                code = result["error_code"]
                if code == 0:
                    log.info(
                        "created topic",
                        extra={
                            "topic": result["name"],
                            "partitions": missing[result["name"]].partitions,
                        },
                    )
                elif code != TopicAlreadyExistsError.errno:
                    error = for_code(code).__name__
                    raise TopicError(
                        f"creating topic {result['name']!r} failed: {error} "
                        f"{result.get('error_message') or ''}".rstrip()
                    )
        _wait(admin, [spec.name for spec in topics], timeout)
        _warn_on_fewer_partitions(admin, topics)
    finally:
        admin.close()


def wait_for_topics(bootstrap: str, names: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Block until every partition of each topic has a leader (or raise TopicError)."""
    if not names:
        return
    admin = _admin(bootstrap, timeout)
    try:
        _wait(admin, names, timeout)
    finally:
        admin.close()


def _wait(admin: Any, names: Sequence[str], timeout: float) -> None:
    from kafka.errors import KafkaTimeoutError

    try:
        admin.wait_for_topics(list(names), timeout_ms=int(timeout * 1000))
    except KafkaTimeoutError as exc:
        raise TopicError(str(exc)) from exc


def _warn_on_fewer_partitions(admin: Any, topics: Sequence[TopicSpec]) -> None:
    wanted = {spec.name: spec.partitions for spec in topics}
    for topic in admin.describe_topics(list(wanted)):
        have = len(topic.get("partitions") or [])
        if have < wanted.get(topic.get("name"), 0):
            log.warning(
                "topic exists with fewer partitions than asked for",
                extra={"topic": topic["name"], "partitions": have, "wanted": wanted[topic["name"]]},
            )
