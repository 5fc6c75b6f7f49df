"""Control records are authentic: signed with a shared key, verified by every reader."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentwatch.cli import main
from agentwatch.ingest.contract.control import (
    KEYS_ENV,
    KEYS_FILE_ENV,
    Applied,
    ControlFold,
    ControlKeyError,
    ControlMessage,
    Keyring,
    Rejected,
    Removed,
    encode_message,
    new_message_id,
)
from agentwatch.ingest.sdk.control import ControlFollower

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
OLD = "old-key:" + "a" * 64
NEW = "new-key:" + "b" * 64
RING = Keyring.parse(f"{NEW}\n{OLD}", "test")


@dataclass
class Record:
    """A consumed record as kafka-python hands it over."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "agent-control"
    partition: int = 0
    offset: int = 0


def message(agent: str = "victim", state: str = "open") -> ControlMessage:
    return ControlMessage(
        id=new_message_id(),
        type="breaker",
        agent_id=agent,
        at=T0,
        actor="person:mallory",
        state=state,  # type: ignore[arg-type]
    )


def signed(m: ControlMessage, ring: Keyring = RING, offset: int = 0) -> Record:
    key, value = m.key.encode(), encode_message(m)
    return Record(key, value, ring.sign(key, value), offset=offset)


def test_an_unsigned_control_record_does_not_halt_the_agent() -> None:
    fold = ControlFold(RING)
    forged = message()
    result = fold.fold(Record(forged.key.encode(), encode_message(forged)))
    assert isinstance(result, Rejected) and result.reason == "unsigned"
    assert fold.current == {}


def test_a_record_signed_with_another_secret_or_altered_after_signing_is_refused() -> None:
    fold = ControlFold(RING)
    stranger = Keyring.parse("new-key:" + "c" * 64, "attacker")
    assert fold.fold(signed(message(), stranger)) == Rejected("agent-control/0/0", "bad signature")
    record = signed(message(state="closed"))
    record.value = encode_message(message(state="open"))
    assert fold.fold(record) == Rejected("agent-control/0/0", "bad signature")
    unknown = Keyring.parse("other:" + "a" * 64, "attacker")
    result = fold.fold(signed(message(), unknown))
    assert isinstance(result, Rejected) and "unknown key id 'other'" in result.reason
    assert fold.current == {}


def test_a_signed_message_moved_to_another_breakers_key_is_refused() -> None:
    fold = ControlFold(RING)
    record = signed(message("victim"))
    record.key = b"someone-else"
    record.headers = RING.sign(record.key, record.value)
    result = fold.fold(record)
    assert isinstance(result, Rejected) and "does not match the message's 'victim'" in result.reason


def test_a_refused_record_keeps_the_last_valid_state() -> None:
    fold = ControlFold(RING)
    opened = message()
    assert isinstance(fold.fold(signed(opened)), Applied)
    forged_close = message(state="closed")
    assert isinstance(fold.fold(Record(b"victim", encode_message(forged_close))), Rejected)
    assert isinstance(fold.fold(Record(b"victim", None)), Rejected)  # unsigned tombstone
    assert fold.current["victim"].message == opened
    assert fold.fold(Record(b"victim", None, RING.sign(b"victim", None))) == Removed("victim")
    assert fold.current == {}


def test_records_signed_with_an_older_key_of_the_ring_are_still_accepted() -> None:
    old_only = Keyring.parse(OLD, "before rotation")
    fold = ControlFold(RING)
    assert isinstance(fold.fold(signed(message(), old_only)), Applied)
    assert RING.signing_id == "new-key"  # the first key signs


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no keys"),
        ("just-a-secret", "expected 'key-id:secret'"),
        ("k:short", "the secret has 5 characters; use at least 32"),
        (f"{OLD}\n{OLD}", "key id 'old-key' is listed twice"),
    ],
)
def test_bad_key_text_is_refused_naming_the_entry(text: str, error: str) -> None:
    with pytest.raises(ControlKeyError, match=error):
        Keyring.parse(text, "keys.txt")


def test_keys_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "control.keys"
    path.write_text(f"# rotated 2026-12-01\n{NEW}\n{OLD}\n")
    assert Keyring.from_env({KEYS_FILE_ENV: str(path)}) == RING
    assert Keyring.from_env({KEYS_ENV: f"{NEW},{OLD}"}) == RING
    assert Keyring.from_env({}) is None


def test_the_sdk_follower_refuses_to_start_without_keys_unless_told_insecure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    monkeypatch.delenv(KEYS_FILE_ENV, raising=False)
    with pytest.raises(ControlKeyError, match="no control keys for agent 'a'") as err:
        ControlFollower("127.0.0.1:1", "a")
    assert "\n" not in str(err.value)
    follower = ControlFollower("127.0.0.1:1", "a", insecure_unsigned=True)
    assert follower.keyring is None and follower.stats()["rejected"] == 0


def test_a_publishing_command_without_keys_fails_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    monkeypatch.delenv(KEYS_FILE_ENV, raising=False)
    argv = ["breaker", "open", "a", "--reason", "r", "--db", str(tmp_path / "x.sqlite")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("agentwatch: no control keys: control records are signed")
    assert not (tmp_path / "x.sqlite").exists() and not list(tmp_path.iterdir())
