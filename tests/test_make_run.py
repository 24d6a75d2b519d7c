"""`make run`'s launcher: the Procfile stack with a private Redis, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.waiting import wait_until
from workers.dev.embedded_redis import free_port

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def http_status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url)
    if auth:
        token = b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_make_run_serves_health_and_flower_then_stops_everything(tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        PORT=str(port), FLOWER_PORT=str(flower_port), VAR_DIR=str(tmp_path / "var"),
        WORKER_CONCURRENCY="1", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )  # fmt: skip
    log = open(tmp_path / "devstack.log", "wb")
    stack = subprocess.Popen(
        [sys.executable, "-m", "workers.dev.devstack"], cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return json.load(r)["workers"] >= 1
            except OSError:
                return False

        wait_until(healthy, 90, 0.25, "gateway healthy with a live worker")
        flower = f"http://127.0.0.1:{flower_port}/api/workers"
        wait_until(lambda: http_status(flower) == 401, 60, 0.25, "Flower asking for credentials")
        assert http_status(flower, ("admin", "wrong")) == 401
        assert http_status(flower, ("admin", "admin")) == 200
        assert (tmp_path / "var" / "redis").is_dir()

        wait_until(lambda: "CLAW.AI is running:" in read_log(tmp_path), 30, 0.25, "the summary")

        # A shutdown of the only worker (from the dashboard or the API) does not end the
        # platform: make run starts the worker again.
        def workers() -> list[str]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/tasks/workers")
            with urllib.request.urlopen(request, timeout=5) as r:
                return [w["hostname"] for w in json.load(r)["workers"] if w["status"] == "online"]

        [hostname] = wait_until(workers, 30, 0.25, "the worker listed")
        shutdown = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tasks/workers/shutdown",
            data=json.dumps({"worker_name": hostname}).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(shutdown, timeout=30) as r:
            assert r.status in (200, 202)
        wait_until(lambda: "make run starts it again" in read_log(tmp_path), 60, 0.25,
                   "the worker started again")  # fmt: skip
        wait_until(healthy, 60, 0.25, "a live worker again")
        assert stack.poll() is None and http_status(f"http://127.0.0.1:{port}/healthz") == 200

        started = descendants(stack.pid)
        assert len(started) >= 5  # honcho, gateway, worker (+pool), beat, flower, redis
        os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert stack.wait(30) == 0  # a clean stop is a success
        wait_until(lambda: not any(running(p) for p in started), 15, 0.1, "no process left")
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
        log.close()
    output = read_log(tmp_path)
    assert "private Redis" in output
    # A clean stop: no process reported with a signal's return code, as if it had failed.
    stopping = output.split("SIGINT received", 1)[1]
    assert "stopped (rc=" not in stopping and "web.1 stopped" in stopping
    summary = output.split("CLAW.AI is running:", 1)[1]
    assert f"http://127.0.0.1:{port}" in summary and "development mode" in summary
    assert f"{flower_port}" in summary and "admin / admin" in summary


def read_log(tmp_path: Path) -> str:
    return (tmp_path / "devstack.log").read_text(errors="replace")
