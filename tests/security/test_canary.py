"""Canary secrets never leave the platform: not in logs, task results, websocket
messages, error responses or Flower's task views.

`tests/deploy/test_secrets_in_logs.py` covers process logs and a few API answers; this
test adds what a client can read: every websocket message of a live feed (all tasks),
the status of every task (results, errors and the admin-only traceback) including
failing ones, error responses (wrong keys that start with the real one, bad input,
forbidden, conflicts), and Flower's task list and task details. Redis has a password,
SMTP a login, webhooks a signing secret and the (fake) OpenAI provider a key: all canaries.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from base64 import b64encode
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.support import fake_openai, fake_smtp
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.fake_smtp import FakeSMTP
from tests.support.processes import ManagedProcess, base_env, start_gateway, start_worker
from tests.support.waiting import async_wait_until
from workers.dev.embedded_redis import EmbeddedRedis, free_port

pytestmark = pytest.mark.slow

REDIS_PASSWORD = "canary-redis-Zq81"
ADMIN_KEY = "canary-admin-key-Kx42"
USER_KEY = "canary-user-key-Lm07"
SMTP_PASSWORD = "canary-smtp-Pw33"
OPENAI_KEY = "sk-canary-openai-Yt56"
WEBHOOK_SECRET = "canary-webhook-Hs19"
FLOWER_PASSWORD = "canary-flower-Fp88"
CANARIES = (REDIS_PASSWORD, ADMIN_KEY, USER_KEY, SMTP_PASSWORD, OPENAI_KEY, WEBHOOK_SECRET,
            FLOWER_PASSWORD)  # fmt: skip
T = "/api/v1/tasks"
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def leaks(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


@pytest.fixture
def canary_platform(tmp_path: Path, monkeypatch) -> Any:
    # The fakes check (and so know) the canaries as their credentials.
    monkeypatch.setattr(fake_smtp, "PASSWORD", SMTP_PASSWORD)
    monkeypatch.setattr(fake_openai, "API_KEY", OPENAI_KEY)
    smtp, openai = FakeSMTP().start(), FakeOpenAI().start()
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    with redis.Redis(port=server.port) as client:  # locked once up: its start-up probe has none
        client.config_set("requirepass", REDIS_PASSWORD)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
    logs = tmp_path / "logs"
    logs.mkdir()
    flower_port = free_port()
    env = {
        "API_KEYS": f"{ADMIN_KEY}:ops:admin,{USER_KEY}:alice:user",
        **smtp.env(), **openai.env(), "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32", "WEBHOOK_TIMEOUT": "2",
        "RETRY_BACKOFF_BASE": "0.1", "FLOWER_USER": "ops", "FLOWER_PASSWORD": FLOWER_PASSWORD,
        "FLOWER_PORT": flower_port,
    }  # fmt: skip
    started: list[ManagedProcess] = []
    try:
        started.append(start_worker(url, logs, concurrency=2, name="canary", env=env))
        started.append(
            ManagedProcess([sys.executable, "-m", "workers.dev.flower"], base_env(url, **env),
                           logs / "flower.log")
        )  # fmt: skip
        gateway = start_gateway(url, logs, env=env)
        started.append(gateway)
        yield {"gateway": gateway, "flower_port": flower_port, "logs": logs,
               "processes": started, "openai": openai}  # fmt: skip
    finally:
        for process in reversed(started):
            process.stop()
        server.stop()
        smtp.stop()
        openai.stop()


async def test_no_canary_in_results_feed_errors_flower_or_logs(canary_platform) -> None:
    gateway = canary_platform["gateway"]
    base = gateway.base_url
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    user = {"Authorization": f"Bearer {USER_KEY}"}
    answers: list[str] = []  # every body and header a client received
    feed: list[str] = []

    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, headers: dict | None = None, **kw: Any) -> Any:
            async with http.request(method, f"{base}{path}", headers=headers, **kw) as resp:
                text = await resp.text()
                answers.append(f"{resp.status} {dict(resp.headers)} {text}")
                return resp.status, (json.loads(text) if text.startswith(("{", "[")) else text)

        ws = await http.ws_connect(f"{base}{T}/ws?all=true", headers=admin)

        async def read_feed() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    feed.append(msg.data)

        reader = asyncio.create_task(read_feed())
        flower_auth = b64encode(f"ops:{FLOWER_PASSWORD}".encode()).decode()
        flower = f"http://127.0.0.1:{canary_platform['flower_port']}"

        async def flower_get(path: str) -> str | None:
            try:
                async with http.get(
                    f"{flower}{path}",
                    timeout=aiohttp.ClientTimeout(total=10),
                    headers={"Authorization": f"Basic {flower_auth}"},
                ) as resp:
                    return await resp.text() if resp.status == 200 else None
            except aiohttp.ClientError:
                return None

        async def flower_knows_tasks() -> str | None:
            text = await flower_get("/api/tasks")
            return text if text and all(i in text for i in ids) else None

        # Flower keeps only the task events it saw: a first task it shows proves it listens.
        await async_wait_until(lambda: flower_get("/api/workers"), 30, 0.3, "Flower up")
        warm_ups: list[str] = []

        async def flower_sees_warm_up() -> bool:
            known = await flower_get("/api/tasks") or ""
            if any(task_id in known for task_id in warm_ups):
                return True
            _, warm = await call(
                "POST", f"{T}/notifications/send", admin,
                json={"channel": "in_app", "recipient": "ops", "message": "warm-up"},
            )  # fmt: skip
            warm_ups.append(warm["task_id"])
            return False

        await async_wait_until(flower_sees_warm_up, 30, 0.5, "Flower capturing events")
        marker = f"fail-{uuid.uuid4().hex[:6]}"
        canary_platform["openai"].fail(marker, Fault(status=400, message="bad request"))
        submissions = [
            ("ai/generate", {"conversation_id": "c1", "user_message": "hello"}),  # streams
            ("ai/generate", {"conversation_id": "c2", "user_message": f"{marker} x"}),  # fails
            ("notifications/send", {"channel": "email", "recipient": "a@example.com",
                                    "message": "m", "subject": "s"}),  # SMTP login
            ("notifications/send", {"channel": "webhook", "message": "m",
                                    "recipient": f"http://127.0.0.1:{free_port()}/down"}),
            ("notifications/send", {"channel": "in_app", "recipient": "alice", "message": "m"}),
            ("knowledge/vectorize", {"document_id": "d", "kb_id": "kb", "text": "some text"}),
        ]  # fmt: skip
        ids = []
        for path, body in submissions:
            status, answer = await call("POST", f"{T}/{path}", admin, json=body)
            assert status == 202, answer
            ids.append(answer["task_id"])

        async def all_finished() -> bool:
            for task_id in ids:
                _, body = await call("GET", f"{T}/status/{task_id}", admin)
                if body["status"] not in TERMINAL:
                    return False
            return True

        await async_wait_until(all_finished, 60, 0.3, "every task finished")
        states = {}
        for task_id in ids:
            _, body = await call("GET", f"{T}/status/{task_id}", admin)
            states[task_id] = body["status"]
        assert "FAILURE" in states.values() and "SUCCESS" in states.values(), states

        # Error responses, including wrong keys that begin with a real one.
        await call("GET", f"{T}/stats", {"Authorization": f"Bearer {ADMIN_KEY}x"})
        await call("GET", f"{T}/stats", {"Authorization": f"Basic {ADMIN_KEY}"})
        await call("POST", "/api/v1/session", json={"api_key": f"{USER_KEY}-wrong"})
        await call("POST", "/api/v1/session", json={"api_key": USER_KEY})
        await call("GET", f"{T}/workers", user)
        await call("POST", f"{T}/ai/generate", admin, json={"user_message": ADMIN_KEY})
        await call(
            "POST",
            f"{T}/ai/generate",
            {**admin, "Content-Type": "application/json"},
            data=b"{not json",
        )
        await call("POST", f"{T}/cancel/{ids[0]}", admin)
        await call("POST", f"{T}/retry/{ids[0]}", admin)
        await call("GET", f"{T}/status/{uuid.uuid4()}", admin)
        await call("GET", f"{T}/list", admin, params={"limit": 100})
        await call("GET", f"{T}/stats", admin)
        await call("GET", f"{T}/workers", admin)
        await call("GET", "/healthz")
        await call("GET", "/metrics", admin)
        status, ticket = await call("POST", f"{T}/ws/ticket", admin)
        assert status == 200
        await ws.send_json({"action": "subscribe", "task_ids": ids})  # snapshots
        await async_wait_until(
            lambda: _async_true(sum('"snapshot"' in m for m in feed) >= len(ids)),
            10, what="snapshots",
        )  # fmt: skip
        await ws.close()
        reader.cancel()

        flower_views = [await async_wait_until(flower_knows_tasks, 30, 0.3, "Flower's tasks")]
        for task_id in ids:
            flower_views.append(await flower_get(f"/api/task/info/{task_id}") or "")
            flower_views.append(await flower_get(f"/task/{task_id}") or "")

    assert any('"chunk"' in m for m in feed) and any('"FAILURE"' in m for m in feed)
    for process in canary_platform["processes"]:
        process.stop()
    found = {
        "websocket": [m for m in feed if leaks(m)],
        "answers": [a for a in answers if leaks(a)],
        "flower": [v for v in flower_views if leaks(v)],
        "logs": {p.name: leaks(p.read_text(errors="replace"))
                 for p in canary_platform["logs"].iterdir()},
    }  # fmt: skip
    found["logs"] = {k: v for k, v in found["logs"].items() if v}
    assert not any(found.values()), found
    # Tickets, like keys, are never logged.
    gateway_log = "".join(p.read_text() for p in canary_platform["logs"].glob("gateway-*.log"))
    assert ticket["ticket"] not in gateway_log


async def _async_true(value: bool) -> bool:
    return value
