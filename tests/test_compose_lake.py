"""The lake profile of docker-compose.yml: processors on several machines landing into one
lake, its PostgreSQL catalog and S3 data path, with no default passwords."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from agentwatch.settings import env_name
from tests.compose_helpers import (
    COMPOSE_FILE,
    ROOT,
    ParseService,
    environment,
    service,
)
from tests.conftest import require_tool

LAKE_PROCESSOR = "lake-processor"
LAKE_ANALYST = "lake-analyst"
LAKE_SERVICES = ("lake-metadata", "lake-s3", "lake-bucket", LAKE_PROCESSOR, LAKE_ANALYST)


def test_docker_compose_accepts_the_lake_profile() -> None:
    docker_compose = require_tool("docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--profile", "lake", "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("name", LAKE_SERVICES)
def test_the_shared_lake_runs_only_in_the_lake_profile(compose: dict[str, Any], name: str) -> None:
    assert service(compose, name)["profiles"] == ["lake"]


@pytest.mark.parametrize("name", (LAKE_PROCESSOR, LAKE_ANALYST))
def test_lake_services_use_the_postgresql_catalog_and_the_s3_data_path(
    parse_service: ParseService, name: str
) -> None:
    from agentwatch.processors.store.location import locate

    args = parse_service(name)
    location = locate(str(args.db))
    assert location.metadata == "postgres:dbname=agentwatch host=lake-metadata user=agentwatch"
    assert location.data_path == "s3://agentwatch-lake/lake/"
    assert "password" not in str(args.db)  # libpq reads PGPASSWORD


def test_lake_processors_land_from_the_kafka_service_in_one_group(
    compose: dict[str, Any], parse_service: ParseService
) -> None:
    args = parse_service(LAKE_PROCESSOR)
    assert (args.command, args.bootstrap, args.group) == (
        "process",
        "kafka:9092",
        "agentwatch-lake",
    )
    depends_on = service(compose, LAKE_PROCESSOR)["depends_on"]
    assert depends_on["lake-metadata"]["condition"] == "service_healthy"
    assert depends_on["lake-bucket"]["condition"] == "service_completed_successfully"


def test_the_lake_endpoint_credentials_agree_with_what_the_processors_use(
    compose: dict[str, Any],
) -> None:
    lake = environment(service(compose, LAKE_PROCESSOR))
    catalog = environment(service(compose, "lake-metadata"))
    s3 = environment(service(compose, "lake-s3"))
    assert lake["PGPASSWORD"] == catalog["POSTGRES_PASSWORD"]
    assert (lake["AWS_ACCESS_KEY_ID"], lake["AWS_SECRET_ACCESS_KEY"]) == (
        s3["MINIO_ROOT_USER"], s3["MINIO_ROOT_PASSWORD"],
    )  # fmt: skip
    assert lake["AWS_ENDPOINT_URL"] == "http://lake-s3:9000"


def test_the_lake_has_no_default_passwords(compose: dict[str, Any]) -> None:
    # Unset, both servers refuse to start: nothing is open by default.
    assert environment(service(compose, "lake-metadata"))["POSTGRES_PASSWORD"] == ""
    assert environment(service(compose, "lake-s3"))["MINIO_ROOT_PASSWORD"] == ""


def test_every_agentwatch_variable_of_a_lake_service_is_a_setting(compose: dict[str, Any]) -> None:
    import msgspec

    from agentwatch.settings import Config

    known = {
        env_name(section.name, key.name)
        for section in msgspec.structs.fields(Config)
        for key in msgspec.structs.fields(section.type)
    }
    for name in (LAKE_PROCESSOR, LAKE_ANALYST):
        variables = [k for k in environment(service(compose, name)) if k.startswith("AGENTWATCH_")]
        assert [v for v in variables if v not in known] == [], name
