"""The Dockerfile and .dockerignore: the agentwatch entry point, a non-root user, the data
volume compose mounts, and a build context without local state."""

from __future__ import annotations

import json
import tomllib
from typing import Any

from tests.compose_helpers import (
    PROCESSOR,
    ROOT,
    named_volume_at,
    service,
)

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def last(instruction: str) -> str:
    values = [rest for keyword, rest in dockerfile_instructions() if keyword == instruction]
    assert values, f"the Dockerfile has no {instruction}"
    return values[-1]


def test_the_image_entrypoint_is_the_agentwatch_console_script() -> None:
    entrypoint = json.loads(last("ENTRYPOINT"))  # exec form, so signals reach agentwatch
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert entrypoint == ["agentwatch"]
    assert scripts[entrypoint[0]] == "agentwatch.cli:main"


def test_the_image_runs_as_a_non_root_user() -> None:
    user = last("USER").split(":")[0]
    assert user not in ("root", "0")


def test_the_image_declares_the_data_volume_compose_mounts(compose: dict[str, Any]) -> None:
    volume = json.loads(last("VOLUME"))
    assert "/data" in volume
    assert named_volume_at(compose, service(compose, PROCESSOR), "/data") is not None


def test_the_build_context_leaves_out_local_state() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".git", ".venv", ".kafka", "data", "build"} <= patterns
