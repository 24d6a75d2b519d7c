"""The bench harness: a private Redis, gateway and worker subprocesses, timing helpers,
and the result table."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.support.processes import ManagedProcess
from workers.dev.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]
SIZES = ("tiny", "small", "full")
# The queue of `bench.noop` on our app (bench/tasks.py); the bare app uses its own.
QUEUE = "bench"


# --- numbers -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Row:
    bench: str
    metric: str
    ours: float
    base: float | None
    unit: str
    # The target as a ratio bound: ("ge", 2.0) means ours/base >= 2.0.
    target: tuple[str, float] | None = None
    base_label: str = ""
    note: str = ""
    # An absolute bound on `ours` as well (e.g. p50 <= 5 ms).
    abs_max: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.base is None or self.base == 0:
            return None
        return self.ours / self.base

    def _checks(self) -> list[tuple[str, bool]]:
        out = []
        targets = [] if self.target is None else [self.target]
        if self.abs_max is not None:
            targets.append(("abs_le", self.abs_max))
        for op, bound in targets:
            if op == "abs_le":
                out.append((f"<= {bound:g} {self.unit}", self.ours <= bound))
            elif self.ratio is not None:
                ok = self.ratio >= bound if op == "ge" else self.ratio <= bound
                out.append((f"{'>=' if op == 'ge' else '<='} {bound:g}x", ok))
        return out

    @property
    def verdict(self) -> str:
        checks = self._checks()
        if not checks:
            return ""
        return "met" if all(ok for _, ok in checks) else "MISSED"

    def target_text(self) -> str:
        return ", ".join(text for text, _ in self._checks())


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:  # nan
        return "nan"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> str:
    head = ("bench", "metric", "ours", "baseline", "baseline is", "ratio", "target", "verdict")
    body = [
        (
            r.bench,
            f"{r.metric} ({r.unit})",
            fmt(r.ours),
            fmt(r.base),
            r.base_label,
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target_text(),
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True))
             for line in (head, *body)]  # fmt: skip
    lines.insert(1, "-+-".join("-" * w for w in widths))
    notes = [f"  {r.bench}/{r.metric}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


# --- processes ---------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def proc_stats(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) and resident memory (MB) of `pid` and its direct
    children alive now: the gateway with WEB_CONCURRENCY > 1 serves from gunicorn's
    worker processes (their RSS summed counts shared pages more than once)."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = rss = 0.0
    for one in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{one}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            with open(f"/proc/{one}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return {"cpu": cpu, "rss_mb": rss}


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Proc(ManagedProcess):
    """A named subprocess in its own session (the test harness's); stop() reaps its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        super().__init__(argv, env, log_dir / f"{name}.log")


def http_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Stack:
    """One private Redis for a whole run; gateways and workers started on demand."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="claw-bench-"))
        self.redis_server = EmbeddedRedis(self.dir / "redis", appendonly=False)
        self.procs: list[Proc] = []
        self.keep_logs = keep_logs

    def __enter__(self) -> Stack:
        self.redis_server.start()
        self.url = self.redis_server.url
        # Our Celery app reads REDIS_URL when first imported: set it before that.
        os.environ["REDIS_URL"] = self.url
        os.environ["API_KEYS"] = ""
        os.environ.setdefault("APP_ENV", "development")
        self.redis = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=300)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.redis.close()
        self.redis_server.stop()
        if not self.keep_logs:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        env.update(
            REDIS_URL=self.url, PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING", API_KEYS="",
            AI_RATE_LIMIT="1000000/s", VECTORIZE_RATE_LIMIT="1000000/s", APP_ENV="development",
        )  # fmt: skip
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(f"{name}-{uuid.uuid4().hex[:4]}", argv, env, self.dir)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """Kill a process whose part of the measurement is over (its data is flushed)."""
        proc.stop(timeout=0)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def flush(self) -> None:
        self.redis.flushdb(asynchronous=True)

    def shared_gateway(self) -> tuple[Proc, str]:
        """One gateway for the whole run (started on first use)."""
        if getattr(self, "_gateway", None) is None or not self._gateway[0].alive():
            self._gateway = self.gateway()
        return self._gateway

    def gateway(self, **extra: Any) -> tuple[Proc, str]:
        port = free_port()
        proc = self.start(
            "gateway", [sys.executable, "-m", "service"],
            self.env(HOST="127.0.0.1", PORT=port, **extra),
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: not proc.alive() or http_up(f"{base}/healthz"), 30, "gateway")
        if not proc.alive():
            raise RuntimeError(f"gateway exited:\n{proc.log()[-2000:]}")
        return proc, base

    def bare_http(self) -> tuple[Proc, str]:
        port = free_port()
        proc = self.start("bare-http", [sys.executable, "-m", "bench.bare_http", str(port)],
                          self.env())  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: not proc.alive() or http_up(f"{base}/healthz"), 30, "bare aiohttp")
        return proc, base

    def worker(
        self, kind: str, queue: str, concurrency: int = 2, wait: bool = True,
        events: bool = False, **env: Any,
    ) -> Proc:  # fmt: skip
        """`ours`: our app and configuration with -E; `bare`: plain Celery defaults (with
        `events`: -E)."""
        hostname = f"{kind}-{uuid.uuid4().hex[:6]}@bench"
        common = ["-Q", queue, "-c", str(concurrency), "-n", hostname, "-P", "prefork",
                  "--loglevel=INFO", "--without-mingle", "--without-gossip"]  # fmt: skip
        if kind == "ours":
            argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E",
                    "-I", "bench.tasks", *common]  # fmt: skip
        else:
            argv = [sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker", *common]
            argv += ["-E"] if events else []
        proc = self.start(f"worker-{kind}", argv, self.env(LOG_LEVEL="INFO", **env))
        if wait:
            self.wait_worker(proc)
        return proc

    def wait_worker(self, proc: Proc, timeout: float = 60) -> None:
        wait_until(lambda: not proc.alive() or " ready." in proc.log(), timeout, proc.name)
        if not proc.alive():
            raise RuntimeError(f"worker exited:\n{proc.log()[-3000:]}")

    def flower(self, port: int, max_tasks: int) -> Proc:
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower",
                f"--port={port}", "--address=127.0.0.1", f"--max_tasks={max_tasks}"]  # fmt: skip
        proc = self.start("flower", argv, self.env(FLOWER_BASIC_AUTH="admin:admin"))
        url = f"http://127.0.0.1:{port}/healthcheck"
        wait_until(lambda: not proc.alive() or http_up(url), 30, "flower")
        if not proc.alive():
            raise RuntimeError(f"flower exited:\n{proc.log()[-2000:]}")
        return proc

    def run_json(self, argv: list[str], timeout: float = 600, **env: Any) -> Any:
        import json

        out = subprocess.run(
            [sys.executable, *argv], env=self.env(**env), cwd=ROOT, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"{argv} failed:\n{out.stderr[-6000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a kombu Redis queue, over its priority lists."""
    keys = (
        [queue]
        + [f"{queue}:{n}" for n in range(1, 10)]
        + [f"{queue}\x06\x16{n}" for n in range(1, 10)]
    )
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())


@contextlib.contextmanager
def sampling(pid: int) -> Iterator[dict[str, float]]:
    """CPU share (percent of one core) and RSS of `pid` over the block."""
    out: dict[str, float] = {}
    before, t0 = proc_stats(pid), time.monotonic()
    yield out
    after, t1 = proc_stats(pid), time.monotonic()
    out["cpu_percent"] = 100 * (after["cpu"] - before["cpu"]) / (t1 - t0)
    out["rss_mb"] = after["rss_mb"]


# --- HTTP load ---------------------------------------------------------------------------


async def sequential_latencies(session: Any, urls: list[str], **kwargs: Any) -> list[float]:
    """One request after another; milliseconds each. Every answer must be 200."""
    out = []
    for url in urls:
        start = time.perf_counter()
        async with session.get(url, **kwargs) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: {resp.status}")
        out.append((time.perf_counter() - start) * 1000)
    return out


async def requests_per_second(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    """Closed loop: `concurrency` clients for `seconds`; answers per second, non-200 count."""
    import asyncio

    import aiohttp

    done = bad = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url) as resp:  # warm-up
            await resp.read()
        stop_at = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done, bad
            while time.perf_counter() < stop_at:
                async with session.get(url) as resp:
                    await resp.read()
                    done += 1
                    bad += resp.status != 200

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - start), bad
