"""Who may POST to ``alerts receive``: the credentials Alertmanager's ``http_config`` sends.

A webhook can run a runbook, and a runbook can halt an agent, so the receiver accepts
only requests that carry a configured credential: ``Authorization: Bearer <token>``
(Alertmanager's ``authorization: {credentials_file: ...}``) or ``Authorization: Basic``
(its ``basic_auth: {username: ..., password_file: ...}``). Secrets come from files or
environment variables, never from flags (a flag shows in ``ps`` and shell history).
Several tokens or users may be listed at once, so a secret can be rotated without a gap.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agentwatch.http_guard import require_secret
from agentwatch.settings import ConfigError

TOKEN_ENV: Final = "AGENTWATCH_RECEIVE_TOKEN"
BASIC_AUTH_ENV: Final = "AGENTWATCH_RECEIVE_BASIC_AUTH"
CHALLENGE: Final = 'Bearer realm="agentwatch", Basic realm="agentwatch"'


@dataclass(frozen=True)
class WebhookAuth:
    """The accepted bearer tokens and basic-auth users; empty means nobody is checked."""

    tokens: tuple[bytes, ...] = ()
    users: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return bool(self.tokens or self.users)

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries one of the credentials."""
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            given = value.encode()
            # Compare with every token (no early exit), so timing tells nothing.
            return any([hmac.compare_digest(given, t) for t in self.tokens])
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            expected = self.users.get(user)
            return (
                bool(sep)
                and expected is not None
                and hmac.compare_digest(password.encode(), expected)
            )
        return False

    @classmethod
    def load(
        cls,
        token_file: str | Path | None,
        basic_auth_file: str | Path | None,
        environ: Mapping[str, str] | None = None,
    ) -> WebhookAuth:
        """Tokens from ``token_file`` (one per line) and ``AGENTWATCH_RECEIVE_TOKEN``; users
        from ``basic_auth_file`` (``user:password`` lines) and ``AGENTWATCH_RECEIVE_BASIC_AUTH``.
        """
        env = os.environ if environ is None else environ
        tokens: list[bytes] = []
        users: dict[str, bytes] = {}
        if token_file:
            for where, line in _lines(token_file):
                tokens.append(require_secret(line, where))
        if env.get(TOKEN_ENV):
            tokens.append(require_secret(env[TOKEN_ENV].strip(), TOKEN_ENV))
        entries = list(_lines(basic_auth_file)) if basic_auth_file else []
        if env.get(BASIC_AUTH_ENV):
            entries.append((BASIC_AUTH_ENV, env[BASIC_AUTH_ENV].strip()))
        for where, line in entries:
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ConfigError(f"{where}: expected 'user:password'")
            users[user] = require_secret(password, where)
        return cls(tuple(tokens), users)


def _lines(path: str | Path) -> list[tuple[str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    found = [
        (f"{path}: line {n}", line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not found:
        raise ConfigError(f"{path}: no credentials in the file")
    return found


__all__ = ["BASIC_AUTH_ENV", "CHALLENGE", "TOKEN_ENV", "WebhookAuth"]
