"""The gateway refuses to start exposed without API keys."""

from __future__ import annotations

import subprocess
import sys

import pytest


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service"],
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_ENV": "production"}, "invalid setting API_KEYS: required with APP_ENV=production"),
        ({"HOST": "0.0.0.0"}, "invalid setting HOST: without API_KEYS the gateway only listens"),
        ({"API_KEYS": "tok:alice:superuser"}, "invalid setting API_KEYS: each entry must be"),
        ({"WEB_CONCURRENCY": "0"}, "invalid setting WEB_CONCURRENCY: Input should be greater"),
    ],
)
def test_refuses_to_start_exposed_or_misconfigured(env: dict[str, str], message: str) -> None:
    proc = start(env)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith(message)
    assert len(proc.stderr.strip().splitlines()) == 1
