"""The catalog: queues, task names and states served from the platform's own definitions,
and the dashboard's scripts keep no copies of them. In-process against `create_app`."""

from __future__ import annotations

from pathlib import Path

from service.app import create_app
from tests.support.api import ALICE, API_KEYS
from workers.core.queues import QUEUES, TASK_QUEUES
from workers.core.settings import load_settings
from workers.taskindex.index import STATES, TERMINAL_STATES

STATIC = Path(__file__).resolve().parents[2] / "service" / "static"


async def test_the_catalog_is_the_platforms_own_definitions(aiohttp_client, redis_url) -> None:
    client = await aiohttp_client(create_app(load_settings(redis_url=redis_url, api_keys=API_KEYS)))
    assert (await client.get("/api/v1/catalog")).status == 401
    resp = await client.get("/api/v1/catalog", headers={"Authorization": f"Bearer {ALICE}"})
    assert resp.status == 200
    body = await resp.json()
    assert body["queues"] == list(QUEUES)
    assert {t["name"]: t["queue"] for t in body["tasks"]} == TASK_QUEUES
    assert body["states"] == list(STATES)
    assert set(body["terminal_states"]) == TERMINAL_STATES


def test_the_dashboard_scripts_hold_no_copy_of_the_queues_or_task_names() -> None:
    """A form names the one task it submits; the lists come from the catalog."""
    queues = set(QUEUES) - {"default"}  # "default" is also an ordinary word
    for script in STATIC.rglob("*.js"):
        text = script.read_text()
        quoted = [n for n in (*queues, *TASK_QUEUES) if f'"{n}"' in text or f"'{n}'" in text]
        assert not queues & set(quoted), script
        assert len(quoted) <= 3, (script, quoted)
