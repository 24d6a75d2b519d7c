"""Fixtures of the security tests: gateways with API keys, on their own Redis database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.api import API_KEYS
from tests.support.processes import database_url


@pytest.fixture(scope="module")
def isolated_gateway(redis_url: str, log_dir) -> Iterator[Any]:
    """A gateway with API keys on a database no worker uses: worker control finds nobody
    to stop, so the fuzzer may call every operation with an admin key."""
    from tests.support.processes import start_gateway

    # No worker runs its tasks: a stream (`?stream=true`) ends after a second with `resume`.
    env = {"API_KEYS": API_KEYS, "SSE_MAX_AGE": "1", "SSE_HEARTBEAT": "0.5"}
    g = start_gateway(database_url(redis_url, 11), log_dir, env=env)
    yield g
    g.stop()
