"""Real processes for tests: Celery workers and the gateway, started and reaped cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.support.waiting import wait_until
from workers.dev.embedded_redis import free_port
from workers.runtime import registry

ROOT = Path(__file__).resolve().parents[2]
TEST_TASKS = "tests.support.tasks"


class ManagedProcess:
    """A subprocess in its own session, so stopping it reaps its children too."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._terminated = False
        self.process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self.pid, signum)

    def children(self) -> list[int]:
        """The pids of its child processes (a worker's pool, a gateway's gunicorn workers)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except FileNotFoundError:
            return []

    def terminate(self) -> None:
        """SIGTERM the process group without waiting (`stop` waits)."""
        if not self._terminated:
            self._terminated = True
            self.signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout`."""
        if self.alive():
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        # Leftover children (a pool process mid-exit) go with the group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()


def database_url(redis_url: str, db: int) -> str:
    """The same Redis server, another database: workers of other tests never see it."""
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


def base_env(redis_url: str, **extra: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(REDIS_URL=redis_url, PYTHONUNBUFFERED="1", LOG_LEVEL="INFO")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Worker(ManagedProcess):
    hostname: str

    def pool_pids(self) -> list[int]:
        return self.children()


def spawn_worker(
    redis_url: str,
    log_dir: Path,
    *,
    queues: str = "ai_high_priority,knowledge_default,notification_default,default",
    concurrency: int = 2,
    name: str | None = None,
    env: dict[str, Any] | None = None,
    pool: str = "prefork",
    extra_modules: tuple[str, ...] = (),
) -> Worker:
    """A worker process, started; `wait_ready` says when it consumes."""
    hostname = f"{name or 'test'}-{uuid.uuid4().hex[:6]}@localhost"
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E",
        "-Q", queues, "-c", str(concurrency), "-n", hostname, "-P", pool,
        "-I", ",".join((TEST_TASKS, *extra_modules)),
        "--loglevel=INFO", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    log_path = log_dir / f"worker-{hostname.split('@')[0]}.log"
    worker = Worker(argv, base_env(redis_url, **(env or {})), log_path)
    worker.hostname = hostname
    return worker


def wait_ready(redis_url: str, workers: list[Worker], timeout: float = 30.0) -> None:
    """Until every worker has registered (it consumes then); fails if one exits instead."""
    client = redis.Redis.from_url(redis_url)
    try:
        for worker in workers:
            wait_until(
                lambda w=worker: not w.alive() or client.hexists(registry.WORKERS_HASH, w.hostname),
                timeout,
                what=f"worker {worker.hostname} ready",
            )
    except BaseException:
        stop_all(workers)  # none is left running for nobody to stop
        raise
    finally:
        client.close()
    for worker in workers:
        if not worker.alive():
            log = worker.log()[-3000:]
            stop_all(workers)
            raise RuntimeError(f"worker exited at start-up:\n{log}")


def start_worker(
    redis_url: str, log_dir: Path, *, ready_timeout: float = 30.0, **kwargs: Any
) -> Worker:
    """A worker, once it consumes (see `spawn_worker` for the options)."""
    worker = spawn_worker(redis_url, log_dir, **kwargs)
    wait_ready(redis_url, [worker], ready_timeout)
    return worker


def start_workers(redis_url: str, log_dir: Path, *specs: dict[str, Any]) -> list[Worker]:
    """Several workers started side by side (each spec: `spawn_worker`'s options), once
    every one consumes: their start-ups overlap instead of adding up."""
    workers = [spawn_worker(redis_url, log_dir, **spec) for spec in specs]
    wait_ready(redis_url, workers)
    return workers


def stop_all(processes: list[ManagedProcess]) -> None:
    """Stop them all, side by side: every one is asked first, then each is waited for."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


class Gateway(ManagedProcess):
    base_url: str

    @contextlib.contextmanager
    def served_by(self, pid: int) -> Iterator[None]:
        """New connections go to gunicorn worker `pid` alone (WEB_CONCURRENCY > 1): the
        other workers are stopped (SIGSTOP) meanwhile and cannot accept."""
        others = [p for p in self.children() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            yield
        finally:
            for other in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, signal.SIGCONT)


def spawn_gateway(redis_url: str, log_dir: Path, *, env: dict[str, Any] | None = None) -> Gateway:
    """A gateway process on a free port, started; `wait_listening` says when it answers."""
    port = free_port()
    log_path = log_dir / f"gateway-{port}.log"
    gateway = Gateway(
        [sys.executable, "-m", "service"],
        base_env(redis_url, HOST="127.0.0.1", PORT=port, **(env or {})),
        log_path,
    )
    gateway.base_url = f"http://127.0.0.1:{port}"
    return gateway


def wait_listening(gateways: list[Gateway], timeout: float = 20.0) -> None:
    """Until every gateway answers HTTP; fails if one exits instead."""
    import urllib.error
    import urllib.request

    def up(gateway: Gateway) -> bool:
        if not gateway.alive():
            return True
        try:
            with urllib.request.urlopen(f"{gateway.base_url}/healthz", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # answering at all means it listens
        except OSError:
            return False

    for gateway in gateways:
        wait_until(lambda g=gateway: up(g), timeout, what="gateway listening")
    for gateway in gateways:
        if not gateway.alive():
            log = gateway.log()[-3000:]
            stop_all(gateways)
            raise RuntimeError(f"gateway exited at start-up:\n{log}")


def start_gateway(
    redis_url: str, log_dir: Path, *, env: dict[str, Any] | None = None, timeout: float = 20.0
) -> Gateway:
    gateway = spawn_gateway(redis_url, log_dir, env=env)
    wait_listening([gateway], timeout)
    return gateway


def start_gateways(
    redis_url: str, log_dir: Path, count: int, *, env: dict[str, Any] | None = None
) -> list[Gateway]:
    """`count` gateways (replicas) started side by side, once every one answers."""
    gateways = [spawn_gateway(redis_url, log_dir, env=env) for _ in range(count)]
    wait_listening(gateways)
    return gateways
