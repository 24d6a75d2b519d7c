"""docker-compose.prod.yml, the Dockerfile and the Procfile: structure and consistency.

Docker does not run on the build machines, so the compose file is checked as data.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from honcho.environ import parse_procfile

from tests.support.processes import ROOT
from workers.core.settings import Settings

APP_SERVICES = ("web", "celery-worker", "celery-beat", "celery-flower")
PROCFILE_OF = {"web": "web", "celery-worker": "worker", "celery-beat": "beat",
               "celery-flower": "flower"}  # fmt: skip
# Variables only Compose and the Procfile's shell use; none of them is a setting.
DEPLOY_ONLY_VARIABLES = {
    "REDIS_PASSWORD", "WEB_PORT", "FLOWER_HOST_PORT", "HONCHO_PROCESS_NAME", "REDIS_URL_HA",
}  # fmt: skip
# Refused or unsafe at their defaults in production: the operator must set them in .env.
PRODUCTION_SECRETS = ("API_KEYS", "FLOWER_PASSWORD", "REDIS_PASSWORD")
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Z0-9_]+)(?P<rest>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.prod.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def procfile() -> dict[str, str]:
    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


SENTINELS = {"redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"}


def test_compose_has_the_app_services_a_primary_a_replica_and_sentinels_in_ha(
    services: dict[str, Any],
) -> None:
    default = {n for n, s in services.items() if not s.get("profiles")}
    assert default == {"redis", "redis-replica", *APP_SERVICES}
    assert {n for n, s in services.items() if s.get("profiles") == ["ha"]} == SENTINELS


def test_a_task_is_accepted_once_the_replica_holds_it(services: dict[str, Any]) -> None:
    """REDIS_REPLICA_ACKS on by default; the replica follows the primary; both refuse
    writes without a replica in reach (a partitioned primary accepts nothing)."""
    for name in APP_SERVICES:
        assert services[name]["environment"]["REDIS_REPLICA_ACKS"] == "${REDIS_REPLICA_ACKS:-1}"
    replica = command_of(services["redis-replica"])
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    for name in ("redis", "redis-replica"):
        args = command_of(services[name])
        assert args[args.index("--min-replicas-to-write") + 1] == "1"
        assert args[args.index("--appendonly") + 1] == "yes"
    for name in SENTINELS:
        script = services[name]["command"][-1]
        assert "sentinel monitor claw redis 6379 2" in script, script


def test_worker_scales_without_fixed_name_or_host_port(services: dict[str, Any]) -> None:
    worker = services["celery-worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert "ports" not in worker
    assert not any("container_name" in s for s in services.values())


def test_redis_is_private_persistent_password_protected_and_checked(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    assert "ports" not in redis and "expose" not in redis
    args = command_of(redis)
    assert args[args.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    volume, mount = redis["volumes"][0].split(":")[:2]
    assert mount == "/data" and volume in compose["volumes"]
    assert redis["healthcheck"]["test"]
    assert redis["restart"] in {"always", "unless-stopped"}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_waits_for_healthy_redis_restarts_and_reads_env_file(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["restart"] in {"always", "unless-stopped", "on-failure"}
    assert service["env_file"] in (".env", [".env"])
    assert service["build"] == "." and service["image"] == services["web"]["image"]
    assert service["environment"]["APP_ENV"] == "production"
    assert service["environment"]["REDIS_URL"].startswith(
        "${REDIS_URL_HA:-redis://:${REDIS_PASSWORD"
    )
    assert service["environment"]["REDIS_URL"].endswith("@redis:6379/0}")


@pytest.mark.parametrize("name", ["web", "celery-worker", "celery-flower", "redis"])
def test_long_running_services_have_health_checks(services: dict[str, Any], name: str) -> None:
    assert services[name]["healthcheck"]["test"]


def test_exactly_one_beat(services: dict[str, Any]) -> None:
    assert services["celery-beat"].get("deploy", {}).get("replicas", 1) == 1


def test_worker_grace_period_outlasts_the_hard_time_limit(services: dict[str, Any]) -> None:
    grace = services["celery-worker"]["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) * 60 > Settings().task_time_limit


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_commands_are_the_procfile_commands(services: dict[str, Any], name: str) -> None:
    assert command_of(services[name]) == shlex.split(procfile()[PROCFILE_OF[name]])


def test_procfile_has_the_four_processes_and_nothing_machine_specific() -> None:
    processes = procfile()
    assert set(processes) == {"web", "worker", "beat", "flower"}
    text = (ROOT / "Procfile").read_text()
    assert "127.0.0.1" not in text and "localhost" not in text and "/home/" not in text
    assert "-A workers.celery_app worker" in processes["worker"]


def test_no_service_runs_as_root(services: dict[str, Any]) -> None:
    users = [
        line.split(None, 1)[1].strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users, "the Dockerfile sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    for name, service in services.items():
        if "build" in service:
            assert service.get("user", users[-1]).split(":")[0] not in {"root", "0"}, name
        else:
            assert service.get("user") not in {None, "root", "0"}, name


def test_every_variable_has_a_default_or_a_clear_error() -> None:
    for path in ("docker-compose.prod.yml", "Procfile"):
        for match in VARIABLE.finditer((ROOT / path).read_text()):
            assert match["rest"].startswith((":-", ":?")), f"{path}: ${{{match['name']}}}"


def test_every_environment_key_is_a_setting(services: dict[str, Any]) -> None:
    known = setting_names()
    for name in APP_SERVICES:
        unknown = set(services[name]["environment"]) - known
        assert not unknown, f"{name} sets {unknown}, which no code reads"
    compose_text = (ROOT / "docker-compose.prod.yml").read_text()
    referenced = {m["name"] for m in VARIABLE.finditer(compose_text)}
    assert referenced <= known | DEPLOY_ONLY_VARIABLES


def test_every_setting_is_provided_or_has_a_default(services: dict[str, Any]) -> None:
    provided = set().union(*(services[n]["environment"] for n in APP_SERVICES))
    for name, field in Settings.model_fields.items():
        assert not field.is_required() or name.upper() in provided, name


def test_env_example_names_the_production_secrets_and_only_known_variables() -> None:
    names = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"#?\s*[A-Z][A-Z0-9_]*=", line)
    }
    assert set(PRODUCTION_SECRETS) <= names
    assert names <= setting_names() | DEPLOY_ONLY_VARIABLES


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") :], "everything is excluded unless listed"
    assert "!.env" not in lines and "!var" not in lines
    assert Path(ROOT / "Dockerfile").read_text().count("COPY .env") == 0
