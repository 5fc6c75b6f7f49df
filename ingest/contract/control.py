"""The control topic's wire format: record keys, message values, signatures, the fold.

This is the only definition of it. Publishers (the ``breaker`` command, runbooks, the
breaker supervisor, the webhook receiver's runbooks) encode and sign here; every reader
(the SDK's follower, ``breaker status``, the supervisor) verifies and folds here, so no
two readers can disagree about what the topic says.

A record is ``key`` (the breaker or directive, see :func:`control_key`), ``value`` (a
:class:`ControlMessage` as JSON, or null for a tombstone) and two headers:
``agentwatch-kid``, the id of the key that signed it, and ``agentwatch-sig``, the
HMAC-SHA256 under that key of :func:`canonical` (a domain tag, then the record key and
value, each length-prefixed). Signing the record key binds a message to the breaker it
names; signing tombstones stops anyone from closing a breaker by deleting its key.
A :class:`Keyring` holds several keys, so keys can be rotated: publish with the new one
while readers still accept the old.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

import msgspec

CONTROL_TOPIC: Final = "agent-control"
CONTROL_VERSION: Final = 1

KEY_ID_HEADER: Final = "agentwatch-kid"
SIGNATURE_HEADER: Final = "agentwatch-sig"
KEYS_ENV: Final = "AGENTWATCH_CONTROL_KEYS"
KEYS_FILE_ENV: Final = "AGENTWATCH_CONTROL_KEYS_FILE"
MIN_SECRET_CHARS: Final = 32
_DOMAIN: Final = b"agentwatch-control-v1\x00"
_NULL: Final = b"\xff\xff\xff\xff"

BreakerState = Literal["closed", "open", "half_open"]
ControlType = Literal["breaker", "rollback", "throttle"]

_DIRECTIVE_SEP: Final = "#"
_TOOL_SEP: Final = "/"


class ControlMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One control message: the value of a record on the control topic, as JSON.

    ``type`` says what it controls. A ``breaker`` message carries ``state`` (and, when
    opening, ``cooldown_s``); a ``rollback`` message the ``versions`` to go back to
    (e.g. ``{"prompt_version": "v3", "model": "gpt-4o-2024-08-06"}``); a ``throttle``
    message ``rate_per_s`` (``None`` lifts the throttle). Unknown fields are ignored,
    so newer producers stay readable (the signature covers the bytes as sent).
    """

    id: str
    type: ControlType
    agent_id: str
    at: dt.datetime
    actor: str
    reason: str = ""
    tool: str | None = None
    state: BreakerState | None = None
    cooldown_s: float | None = None
    alert: str | None = None  # fingerprint of the alert that caused it
    versions: dict[str, str] | None = None
    rate_per_s: float | None = None
    v: int = CONTROL_VERSION

    @property
    def key(self) -> str:
        return control_key(self.agent_id, self.tool, self.type)


def control_key(agent_id: str, tool: str | None = None, kind: ControlType = "breaker") -> str:
    """The record key: ``agent``, ``agent/tool``, ``agent#rollback`` or ``agent#throttle``.

    One key per breaker (and per directive) is what lets compaction keep exactly the
    current state. Agent ids must not contain ``/`` or ``#``; tool names may.
    """
    if not agent_id or _TOOL_SEP in agent_id or _DIRECTIVE_SEP in agent_id:
        raise ValueError(f"agent id {agent_id!r} is empty or holds '/' or '#'")
    if kind == "breaker":
        return agent_id if tool is None else f"{agent_id}{_TOOL_SEP}{tool}"
    return f"{agent_id}{_DIRECTIVE_SEP}{kind}"


def new_message_id() -> str:
    return uuid.uuid4().hex


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(ControlMessage)


def encode_message(message: ControlMessage) -> bytes:
    return _ENCODER.encode(message)


def decode_message(raw: bytes) -> ControlMessage:
    """Parse and check one record value; raises ``msgspec.DecodeError`` or ``ValueError``."""
    message = _DECODER.decode(raw)
    if message.type == "breaker" and message.state is None:
        raise ValueError("a breaker message needs a state")
    if message.at.tzinfo is None:
        raise ValueError("'at' needs a timezone")
    return message


# --------------------------------------------------------------------------- signatures


class ControlKeyError(ValueError):
    """Control keys that are missing or unusable; the message says where and how to fix."""


Headers = Sequence[tuple[str, bytes]]


def canonical(record_key: bytes, value: bytes | None) -> bytes:
    """What is signed: a domain tag, then key and value each prefixed by its length."""
    parts = [_DOMAIN, len(record_key).to_bytes(4, "big"), record_key]
    parts += [_NULL] if value is None else [len(value).to_bytes(4, "big"), value]
    return b"".join(parts)


@dataclass(frozen=True)
class Keyring:
    """The shared secrets by key id; the first one signs, every one verifies.

    The text form is one ``key-id:secret`` per line (``#`` starts a comment), as in a
    keys file or ``AGENTWATCH_CONTROL_KEYS`` (where ``,`` also separates keys). To rotate,
    put the new key first everywhere that publishes, keep the old one listed until every
    record signed with it has been superseded, then drop it.
    """

    keys: Mapping[str, bytes]
    signing_id: str

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        keys: dict[str, bytes] = {}
        lines = text.replace(",", "\n").splitlines()
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key_id, sep, secret = (part.strip() for part in line.partition(":"))
            where = f"{source}: entry {number}"
            if not sep or not key_id or not secret:
                raise ControlKeyError(f"{where}: expected 'key-id:secret'")
            if len(secret) < MIN_SECRET_CHARS:
                raise ControlKeyError(
                    f"{where} ({key_id}): the secret has {len(secret)} characters; use at "
                    f"least {MIN_SECRET_CHARS} (e.g. `openssl rand -hex 32`)"
                )
            if key_id in keys:
                raise ControlKeyError(f"{where}: key id {key_id!r} is listed twice")
            keys[key_id] = secret.encode()
        if not keys:
            raise ControlKeyError(f"{source}: no keys (expected 'key-id:secret' lines)")
        return cls(keys, next(iter(keys)))

    @classmethod
    def from_file(cls, path: str | Path) -> Keyring:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ControlKeyError(f"cannot read the control keys file {path}: {exc}") from None
        return cls.parse(text, str(path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring | None:
        """Keys from ``AGENTWATCH_CONTROL_KEYS_FILE``, else ``AGENTWATCH_CONTROL_KEYS``."""
        env = os.environ if environ is None else environ
        if env.get(KEYS_FILE_ENV):
            return cls.from_file(env[KEYS_FILE_ENV])
        if env.get(KEYS_ENV):
            return cls.parse(env[KEYS_ENV], KEYS_ENV)
        return None

    def sign(self, record_key: bytes, value: bytes | None) -> list[tuple[str, bytes]]:
        """The headers that make a record authentic."""
        digest = hmac.new(self.keys[self.signing_id], canonical(record_key, value), hashlib.sha256)
        return [
            (KEY_ID_HEADER, self.signing_id.encode()),
            (SIGNATURE_HEADER, digest.hexdigest().encode()),
        ]

    def check(self, record_key: bytes, value: bytes | None, headers: Headers) -> str | None:
        """None when a key of this ring signed the record; otherwise why it is refused."""
        found = dict(headers or ())
        key_id = found.get(KEY_ID_HEADER)
        signature = found.get(SIGNATURE_HEADER)
        if key_id is None or signature is None:
            return "unsigned"
        secret = self.keys.get(key_id.decode("utf-8", "replace"))
        if secret is None:
            return f"signed with unknown key id {key_id.decode('utf-8', 'replace')!r}"
        expected = hmac.new(secret, canonical(record_key, value), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature):
            return "bad signature"
        return None


# --------------------------------------------------------------------------- the fold


class ControlRecord(Protocol):
    """What the fold needs of a consumed record (kafka-python's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True)
class Applied:
    """A control message in force, with where it was read."""

    message: ControlMessage
    partition: int
    offset: int


@dataclass(frozen=True)
class Removed:
    """A tombstone: the key's breaker or directive is gone (a breaker: closed)."""

    key: str


@dataclass(frozen=True)
class Rejected:
    """A record the fold refused, and why; it changed nothing."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


Folded = Applied | Removed | Rejected


class ControlFold:
    """The topic's current state: the last authentic record per key, tombstones deleting.

    ``keyring`` None accepts records without checking signatures: only for a deployment
    that has explicitly opted out (``insecure_unsigned``), never by default.
    """

    def __init__(self, keyring: Keyring | None) -> None:
        self.keyring = keyring
        self.current: dict[str, Applied] = {}

    def fold(self, record: ControlRecord) -> Folded:
        where = f"{record.topic}/{record.partition}/{record.offset}"
        if record.key is None:
            return Rejected(where, "no record key")
        if self.keyring is not None:
            problem = self.keyring.check(record.key, record.value, record.headers)
            if problem is not None:
                return Rejected(where, problem)
        key = record.key.decode("utf-8", "replace")
        if record.value is None:
            self.current.pop(key, None)
            return Removed(key)
        try:
            message = decode_message(record.value)
        except ValueError as exc:  # msgspec.DecodeError is a ValueError
            return Rejected(where, f"not a control message: {exc}")
        if message.key != key:
            return Rejected(
                where, f"record key {key!r} does not match the message's {message.key!r}"
            )
        applied = Applied(message, record.partition, record.offset)
        self.current[key] = applied
        return applied


__all__ = [
    "CONTROL_TOPIC",
    "CONTROL_VERSION",
    "KEYS_ENV",
    "KEYS_FILE_ENV",
    "Applied",
    "BreakerState",
    "ControlFold",
    "ControlKeyError",
    "ControlMessage",
    "ControlRecord",
    "ControlType",
    "Folded",
    "Keyring",
    "Rejected",
    "Removed",
    "canonical",
    "control_key",
    "decode_message",
    "encode_message",
    "new_message_id",
]
