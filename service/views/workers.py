"""Worker information and control (admin only)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from service.blocking import in_pool
from service.coverage import WORKERS_LEFT, has_left
from service.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable
from service.keys import celery_key, redis_key
from service.middlewares import principal_of
from service.requests import load_json, load_query
from service.schemas import (
    PoolRestartQuery,
    WorkerControlResponse,
    WorkersResponse,
    WorkerTarget,
    shared,
)
from workers.runtime import registry
from workers.taskindex.status import iso

INSPECT_TIMEOUT = 1.0
CONTROL_TIMEOUT = 5.0
SHUTDOWN_WAIT = 10.0
KEEP_RUNNING = b"workers.dev.keep_running"


def require_admin(request: web.Request) -> None:
    if not principal_of(request).is_admin:
        raise Forbidden("admin key required")


async def _blocking(request: web.Request, call: Any) -> Any:
    """Run a Celery control call in the bounded pool; broker errors become 503."""
    from kombu.exceptions import OperationalError

    try:
        return await in_pool(request, call)
    except OperationalError as exc:
        raise ServiceUnavailable("broker unavailable") from exc


async def _registry(
    request: web.Request,
) -> tuple[dict[str, dict], dict[str, float], dict[str, float]]:
    """The workers' descriptions, last heartbeats, and when those that announced leaving
    did (service/coverage.py)."""
    client = request.app[redis_key]
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(registry.WORKERS_HASH)
        pipe.zrange(registry.WORKERS_SEEN, 0, -1, withscores=True)
        pipe.zrange(WORKERS_LEFT, 0, -1, withscores=True)
        described, seen, left = await pipe.execute()
    return {h: json.loads(v) for h, v in described.items()}, dict(seen), dict(left)


async def list_workers(request: web.Request) -> web.Response:
    require_admin(request)
    inspect = request.app[celery_key].control.inspect(timeout=INSPECT_TIMEOUT)
    # The broadcasts run side by side, each bounded by the inspect timeout.
    (described, seen, left), stats, active, reserved, queues = await asyncio.gather(
        _registry(request),
        _blocking(request, inspect.stats),
        _blocking(request, inspect.active),
        _blocking(request, inspect.reserved),
        _blocking(request, inspect.active_queues),
    )
    stats, active, reserved, queues = (x or {} for x in (stats, active, reserved, queues))
    live_since = registry.live_since(time.time())
    hostnames = sorted(set(described) | set(seen) | set(stats))
    workers = []
    for host in hostnames:
        info = described.get(host, {})
        stat = stats.get(host, {})
        pool = stat.get("pool", {})
        last = seen.get(host)
        # A worker that announced leaving is gone, though registered until its process
        # exits (after its running tasks).
        online = (last and last >= live_since) or host in stats
        workers.append(
            {
                "hostname": host,
                "status": "online" if online and not has_left(host, last, left) else "offline",
                "queues": [q["name"] for q in queues.get(host, [])] or info.get("queues", []),
                "concurrency": pool.get("max-concurrency", info.get("concurrency")),
                "active": len(active[host]) if host in active else None,
                "reserved": len(reserved[host]) if host in reserved else None,
                "processed": sum(stat.get("total", {}).values()) if stat else None,
                "last_heartbeat": iso(last),
                "pid": stat.get("pid", info.get("pid")),
                "responded": host in stats,
            }
        )
    body = {"workers": workers, "count": len(workers)}
    return web.json_response(shared(WorkersResponse).dump(body))


async def _known_worker(request: web.Request, name: str) -> None:
    described, seen, _ = await _registry(request)
    if name not in described and name not in seen:
        raise NotFound(f"no worker named {name}")


async def pool_restart(request: web.Request) -> web.Response:
    require_admin(request)
    name = load_query(request, shared(PoolRestartQuery))["worker_name"]
    await _known_worker(request, name)
    control = request.app[celery_key].control
    replies = await _blocking(
        request,
        lambda: control.pool_restart(
            destination=[name], reply=True, timeout=CONTROL_TIMEOUT, reload=False
        ),
    )
    return _control_response("pool_restart", replies)


async def shutdown(request: web.Request) -> web.Response:
    """Ask workers to stop (warm: running tasks finish first).

    A worker raises on this command before it could reply, so the answer is what the
    registry shows: each targeted worker that deregistered within the wait, or 202 for
    those still finishing their tasks. A worker that `make run` keeps running is started
    again: its reply says so (`restarted_by`).
    """
    require_admin(request)
    target = await _target(request)
    described, seen, left = await _registry(request)
    if target["all"]:
        since = registry.live_since()
        names = sorted(h for h, t in seen.items() if t >= since and not has_left(h, t, left))
    else:
        names = [target["worker_name"]]
        if names[0] not in described and names[0] not in seen:
            raise NotFound(f"no worker named {names[0]}")
    if not names:
        # An empty destination list means "every worker" to Celery: never send it.
        body = shared(WorkerControlResponse).dump({"action": "shutdown", "replies": {}})
        return web.json_response(body)
    # Asked before it stops: once it has, its process (and its parent) are gone.
    restarted = {n for n in names if kept_running(described.get(n, {}).get("pid"))}
    control = request.app[celery_key].control
    await _blocking(request, lambda: control.broadcast("shutdown", destination=names))
    client = request.app[redis_key]

    async def stopped() -> list[str]:
        still = await client.hmget(registry.WORKERS_HASH, names)
        return [n for n, v in zip(names, still, strict=True) if v is None]

    deadline = time.monotonic() + SHUTDOWN_WAIT
    done = await stopped()
    while len(done) < len(names) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        done = await stopped()
    replies: dict[str, dict[str, str]] = {
        n: {"ok": "stopped" if n in done else "stopping"} for n in names
    }
    for name in restarted:
        replies[name]["restarted_by"] = "make run"
    body = shared(WorkerControlResponse).dump({"action": "shutdown", "replies": replies})
    return web.json_response(body, status=200 if len(done) == len(names) else 202)


def kept_running(pid: Any) -> bool:
    """Whether the worker process `pid` runs under `make run`'s keep_running
    (workers/dev/keep_running.py), which starts it again after a requested shutdown.

    Told by the process's parent, when it is on this machine (`make run` runs everything
    on one): the worker's command line names Celery and its parent's names keep_running.
    Anywhere else (another machine, no /proc) it is not known, and not claimed."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        own = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents = Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    return b"celery" in own and KEEP_RUNNING in parents


async def _target(request: web.Request) -> dict[str, Any]:
    """The worker named in the query or in a JSON body (one of the two: a body beside a
    query would otherwise go unread, malformed or not)."""
    if request.query and request.can_read_body:
        raise BadRequest(
            "name the worker in the query or in the body, not both",
            details={"body": ["not allowed with a query"]},
        )
    if request.query:
        return load_query(request, shared(WorkerTarget))
    return await load_json(request, shared(WorkerTarget))


def _control_response(action: str, replies: list[dict] | None) -> web.Response:
    merged: dict[str, Any] = {}
    for reply in replies or []:
        merged.update(reply)
    status = 200 if merged else 504
    body = shared(WorkerControlResponse).dump({"action": action, "replies": merged})
    if not merged:
        body["error"] = "no worker replied in time"
    return web.json_response(body, status=status)
