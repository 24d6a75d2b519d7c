"""The test harness: a real Redis, real Celery workers, the real gateway.

Redis starts once per session on a free port, before any test imports the Celery app, and
REDIS_URL points every process at it. Workers and gateways are real subprocesses.

Under pytest-xdist (`make test` runs `-n`) each xdist worker is such a session: its own
Redis, its own shared worker and gateway. Tests of one module run on one xdist worker
(they share module fixtures and named queues); a module in SPREAD makes a unit of each
test, the modules in UNITS go together. The longest units are handed out first (LONGEST,
then modules marked `slow`).
"""

from __future__ import annotations

import ast
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from workers.dev.embedded_redis import EmbeddedRedis

# CPython 3.11.7 keeps the AST converter's recursion count in one per-interpreter place,
# so an `ast.parse` in one thread while another converts a tree fails with "SystemError:
# AST constructor recursion depth mismatch" (gh-106905, fixed in 3.11.8). pytest parses
# when it rewrites a module it imports late and when it reports a failure, and Python's
# traceback formatting parses too: a run whose tests passed ended in an INTERNALERROR. The
# tree itself is fine; parsing again succeeds.
_parse = ast.parse


def _parse_again_on_the_3_11_7_bug(*args: Any, **kwargs: Any) -> Any:
    for attempt in range(5):
        try:
            return _parse(*args, **kwargs)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")


if sys.version_info[:3] == (3, 11, 7):
    ast.parse = _parse_again_on_the_3_11_7_bug  # type: ignore[assignment]

_server: EmbeddedRedis | None = None

# Modules whose tests are long and share no costly module fixture: under xdist each test
# is its own unit of work.
SPREAD = {
    "tests/deploy/test_graceful.py",
    "tests/service/test_cancel_and_workers.py",
    "tests/workers/runtime/test_delivery_contract.py",
}
# Modules that use the session's `worker`: one unit of work, so one xdist process starts it.
SHARED_WORKER = "the session worker's modules"
UNITS = dict.fromkeys(
    (
        "tests/service/test_health.py",
        "tests/service/test_knowledge_api.py",
        "tests/service/test_submissions.py",
        "tests/service/test_submit.py",
        "tests/service/test_tasks_api.py",
    ),
    SHARED_WORKER,
)
# The longest units (tens of seconds under `make test`), handed out first so that none
# starts last and holds the run open; then the modules marked `slow`, then the rest.
LONGEST = (
    "tests/ui/test_newcomer.py",
    "tests/bench/test_bench_smoke.py",
    "tests/ui/test_dashboard.py",
    "tests/security/test_api_fuzz.py",
    "tests/workers/runtime/test_delivery_contract.py",
    "tests/workers/tasks/test_rate_limit.py",
    "tests/service/test_live_feed.py",
    "tests/security/test_canary.py",
)


def _is_xdist_controller(config: pytest.Config) -> bool:
    """The process that hands tests to xdist workers and runs none itself."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    global _server
    if _is_xdist_controller(config):
        return
    base = Path(config.rootpath) / "var" / "test"
    base.mkdir(parents=True, exist_ok=True)
    # More databases than Redis's 16: each module that starts workers of its own takes
    # one (tests/test_test_databases.py).
    _server = EmbeddedRedis(
        base / f"redis-{os.getpid()}", appendonly=False, extra_args=("--databases", "32")
    ).start()
    os.environ["REDIS_URL"] = _server.url
    # A developer's .env must not leak into the suite.
    os.environ.setdefault("APP_ENV", "development")
    os.environ["API_KEYS"] = ""
    # The platform-wide rate limits (10/min AI replies) would pace the whole suite; the
    # rate limit's own tests set small limits on their workers.
    os.environ["AI_RATE_LIMIT"] = "100000/m"
    os.environ["VECTORIZE_RATE_LIMIT"] = "100000/m"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """LONGEST first, then slow modules, whole modules at a time (their module fixtures are
    set up once), stable within each kind: under xdist the order work is handed out."""
    slow = {_module_of(item.nodeid) for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, bool]:
        module = _module_of(item.nodeid)
        first = LONGEST.index(module) if module in LONGEST else len(LONGEST)
        return first, module not in slow

    items.sort(key=rank)


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: unknown without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """One module is one unit of work (its tests share module fixtures and named queues),
    except the modules in SPREAD, whose tests start their own processes: each of their
    tests is a unit; and modules named in UNITS go together. (pytest-xdist's `loadgroup`
    cannot express this under pytest 9: it cannot rename a test's node id any more.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = _module_of(nodeid)
            return nodeid if module in SPREAD else UNITS.get(module, module)

    return ModuleScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    assert _server is not None
    return _server.url


@pytest.fixture(scope="session")
def redis_server() -> EmbeddedRedis:
    assert _server is not None
    return _server


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def key() -> str:
    """A fresh Redis key prefix for one test."""
    return f"tests:{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def celery_app():  # type: ignore[no-untyped-def]
    from workers.celery_app import celery_app

    return celery_app


@pytest.fixture
def start_worker(redis_url: str, log_dir: Path) -> Iterator[Callable[..., Any]]:
    """Start workers for one test; every one is stopped at the end, pass or fail."""
    from tests.support.processes import start_worker as start
    from tests.support.processes import stop_all

    started: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        worker = start(redis_url, log_dir, **kwargs)
        started.append(worker)
        return worker

    yield factory
    stop_all(started)


@pytest.fixture
def start_workers(redis_url: str, log_dir: Path) -> Iterator[Callable[..., list[Any]]]:
    """Start several workers side by side (one dict of options each); stopped at the end."""
    from tests.support.processes import start_workers as start
    from tests.support.processes import stop_all

    started: list[Any] = []

    def factory(*specs: dict[str, Any]) -> list[Any]:
        workers = start(redis_url, log_dir, *specs)
        started.extend(workers)
        return workers

    yield factory
    stop_all(started)


@pytest.fixture(scope="session")
def worker(redis_url: str, log_dir: Path) -> Iterator[Any]:
    """One worker on all four queues, shared by the tests that only need the default."""
    from tests.support.processes import start_worker as start

    w = start(redis_url, log_dir, name="shared", concurrency=2)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def gateway(redis_url: str, log_dir: Path) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    g = start_gateway(redis_url, log_dir)
    yield g
    g.stop()


@pytest.fixture
def serve_gateway(aiohttp_client: Any, redis_url: str) -> Callable[..., Any]:
    """The gateway in this process: `create_app` as `python -m service` builds it, served
    on a loopback port by aiohttp's test server, on the session's Redis (settings given as
    keyword arguments or as `env` override the environment's). For what the API answers: validation,
    errors, auth, isolation, the OpenAPI document. What needs a process of its own
    (signals, restarts, several processes, blocking clients) uses `gateway` or
    `start_gateway`."""
    from service.app import create_app, freeze_heap
    from tests.support.api import InProcessGateway
    from workers.core.settings import load_settings

    async def serve(env: dict[str, str] | None = None, **settings: Any) -> InProcessGateway:
        """`env`: variables as a gateway process would read them (`**settings` win)."""
        with pytest.MonkeyPatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, str(value))
            loaded = load_settings(**{"redis_url": redis_url, **settings})
        app = create_app(loaded)
        # A process-wide GC tuning, for a gateway process's life: in the test process it
        # would cost a full collection per test and keep every test's garbage.
        app.on_startup.remove(freeze_heap)
        return InProcessGateway(await aiohttp_client(app))

    return serve
