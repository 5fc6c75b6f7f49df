"""How the processor meets faults: Kafka outages are waited out, storage errors end the run.

A Kafka error is transient: the broker restarts, a network blips. The processor keeps
its consumer, backs off (doubling up to a cap), logs one line when contact is lost and
one when it is back, and resumes after its last committed batch, so nothing is landed
twice. The one exception is the very first contact: if no broker ever answers within
the connect timeout the address is most likely wrong, and waiting helps nobody.

A storage error (full disk, read-only data dir) is not transient: the run ends with
that error as its last line and its own exit code, after the half-written files of the
failed batch are removed. Nothing was committed for it, so a restart lands it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from kafka.errors import KafkaError

log = logging.getLogger(__name__)

EXIT_KAFKA: Final = 1
EXIT_STORAGE: Final = 4

# Errors no retry cures: wrong credentials, no permission, a bad configuration.
_PERMANENT: Final = (
    "SaslAuthenticationFailedError",
    "AuthenticationFailedError",
    "AuthenticationMethodNotSupported",
    "TopicAuthorizationFailedError",
    "GroupAuthorizationFailedError",
    "ClusterAuthorizationFailedError",
    "KafkaConfigurationError",
    "UnsupportedVersionError",
)


class ProcessorFault(Exception):
    """Ends the run: the message is the last line printed, ``exit_code`` the status."""

    exit_code: int = EXIT_KAFKA


class KafkaUnreachable(ProcessorFault):
    exit_code = EXIT_KAFKA


class StorageFault(ProcessorFault):
    exit_code = EXIT_STORAGE


def is_transient(exc: BaseException) -> bool:
    """True for Kafka errors a retry may cure (lost connections, timeouts, elections)."""
    return isinstance(exc, KafkaError) and not any(
        base.__name__ in _PERMANENT for base in type(exc).__mro__
    )


class Outage:
    """The state of contact with Kafka: one log line per change and the next backoff."""

    def __init__(
        self,
        initial_s: float = 0.2,
        max_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        self.outages = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, during: str) -> float:
        """Record a failure; return how long to wait before trying again."""
        if self.since is None:
            self.since = self.clock()
            self.outages += 1
            log.warning(
                "lost contact with Kafka; retrying with backoff",
                extra={"during": during, "error": f"{type(exc).__name__}: {exc}"},
            )
        self.failures += 1
        delay: float = self.initial_s * 2.0 ** min(self.failures - 1, 16)
        return min(self.max_s, delay)

    def recovered(self) -> None:
        if self.since is None:
            return
        log.info(
            "Kafka reachable again; resuming after the last committed batch",
            extra={"outage_s": round(self.clock() - self.since, 1), "retries": self.failures},
        )
        self.since = None
        self.failures = 0
