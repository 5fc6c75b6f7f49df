"""How every agentwatch Kafka client connects: bootstrap servers plus TLS and SASL.

One ``[kafka]`` settings section (or ``AGENTWATCH_KAFKA_*`` environment variables)
describes the connection once; :func:`client_options` turns it into the keyword
arguments of kafka-python's producer, consumer and admin client, so no client can be
created that forgets the security settings. The SASL password comes from a file
(``sasl_password_file``) or the ``AGENTWATCH_KAFKA_SASL_PASSWORD`` variable, never
from a flag, and is never part of a repr or a log line.

Library users (the SDK) pass a :class:`KafkaSecurity` as a plain argument; without one
they get the process default: what the CLI configured, else the environment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from agentwatch.errors import ConfigError

if TYPE_CHECKING:
    from agentwatch.settings import Settings

PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PASSWORD_ENV: Final = "AGENTWATCH_KAFKA_SASL_PASSWORD"
SECTION: Final = "kafka"


class Secret:
    """A string that prints as ``***``: a password must never reach a log or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class KafkaSecurity(msgspec.Struct, frozen=True, kw_only=True):
    """TLS and SASL settings of a Kafka connection (the ``[kafka]`` section's security keys).

    ``password`` is for library callers that hold the secret already; the CLI reads it
    from ``password_file`` or ``$AGENTWATCH_KAFKA_SASL_PASSWORD``.
    """

    protocol: str = "PLAINTEXT"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True
    sasl_mechanism: str | None = None
    username: str | None = None
    password_file: str | None = None
    password: Secret | None = None

    def __repr__(self) -> str:
        shown = {
            "protocol": self.protocol,
            "ca_file": self.ca_file,
            "sasl_mechanism": self.sasl_mechanism,
            "username": self.username,
        }
        text = ", ".join(f"{k}={v!r}" for k, v in shown.items() if v is not None)
        return f"KafkaSecurity({text})"

    __str__ = __repr__

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def check(self) -> None:
        """Raise ConfigError naming the key for a combination kafka-python would reject."""
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"[kafka] security_protocol must be one of {', '.join(PROTOCOLS)}, "
                f"got {self.protocol!r}"
            )
        for key, path in (
            ("ssl_ca_file", self.ca_file),
            ("ssl_cert_file", self.cert_file),
            ("ssl_key_file", self.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"[kafka] {key}: no such file {path}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("[kafka] ssl_cert_file and ssl_key_file go together")
        if not self.uses_sasl:
            return
        if self.sasl_mechanism not in MECHANISMS:
            raise ConfigError(
                f"[kafka] sasl_mechanism must be one of {', '.join(MECHANISMS)} with "
                f"security_protocol {self.protocol}, got {self.sasl_mechanism!r}"
            )
        if not self.username:
            raise ConfigError(f"[kafka] sasl_username is required with {self.protocol}")
        self.resolved_password()

    def resolved_password(self) -> str:
        """The SASL password: the argument, else the password file, else the environment."""
        if self.password is not None:
            return self.password.reveal()
        if self.password_file:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"[kafka] sasl_password_file: cannot read {self.password_file}: "
                    f"{exc.strerror or exc}"
                ) from None
            password = text.rstrip("\r\n")
        else:
            password = os.environ.get(PASSWORD_ENV, "")
        if not password:
            raise ConfigError(
                f"no SASL password: set [kafka] sasl_password_file or ${PASSWORD_ENV}"
            )
        return password

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments (valid for producer, consumer and admin alike)."""
        self.check()
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_check_hostname"] = self.check_hostname
            if self.ca_file:
                kwargs["ssl_cafile"] = self.ca_file
            if self.cert_file:
                kwargs["ssl_certfile"] = self.cert_file
                kwargs["ssl_keyfile"] = self.key_file
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.resolved_password()
        return kwargs


def security_from_settings(settings: Settings) -> KafkaSecurity:
    """The ``[kafka]`` security keys (or their ``AGENTWATCH_KAFKA_*`` variables)."""

    def text(key: str) -> str | None:
        value = settings.get(SECTION, key, "")
        return value or None

    return KafkaSecurity(
        protocol=settings.get(SECTION, "security_protocol", "PLAINTEXT").upper(),
        ca_file=text("ssl_ca_file"),
        cert_file=text("ssl_cert_file"),
        key_file=text("ssl_key_file"),
        check_hostname=settings.get(SECTION, "ssl_check_hostname", True),
        sasl_mechanism=(text("sasl_mechanism") or "").upper() or None,
        username=text("sasl_username"),
        password_file=text("sasl_password_file"),
    )


_lock = threading.Lock()
_default: KafkaSecurity | None = None


def configure(security: KafkaSecurity | None) -> None:
    """Set the process-wide default (the CLI calls this once with its settings)."""
    global _default
    with _lock:
        _default = security


def default_security() -> KafkaSecurity:
    """What :func:`configure` set, else what the environment says."""
    with _lock:
        if _default is not None:
            return _default
    from agentwatch.settings import Settings

    return security_from_settings(Settings())


def client_options(
    bootstrap: str | Sequence[str], security: KafkaSecurity | None = None
) -> dict[str, Any]:
    """``bootstrap_servers`` plus the TLS/SASL arguments: spread into every kafka-python client."""
    chosen = security if security is not None else default_security()
    return {"bootstrap_servers": bootstrap, **chosen.client_kwargs()}


__all__ = [
    "KafkaSecurity",
    "Secret",
    "client_options",
    "configure",
    "default_security",
    "security_from_settings",
]
