"""The Flower launcher: basic auth from the settings, default credentials refused in production."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import deploy_env
from tests.support.processes import ROOT
from workers.core.settings import load_settings
from workers.dev.flower import flower_environment


def launch(redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.dev.flower"], cwd=ROOT, env=deploy_env(redis_url, **env),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("user", "password"), [("admin", "admin"), ("ops", ""), ("", "s3cret-enough")]
)
def test_production_refuses_default_or_empty_credentials_with_one_line(
    redis_url: str, user: str, password: str
) -> None:
    done = launch(redis_url, APP_ENV="production", FLOWER_USER=user, FLOWER_PASSWORD=password)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("invalid setting FLOWER_")
    assert "Traceback" not in done.stderr


def test_flower_gets_the_credentials_as_basic_auth_not_as_unknown_options(
    tmp_path: Path,
) -> None:
    settings = load_settings(flower_user="ops", flower_password="pw-123456")
    env = flower_environment(settings, {"FLOWER_USER": "x", "FLOWER_PASSWORD": "y", "A": "1"})
    assert env == {"A": "1", "FLOWER_BASIC_AUTH": "ops:pw-123456"}
