"""Each test module that starts workers of its own gives them a Redis database of their
own: two such modules sharing one (under xdist they run at once) take each other's tasks,
and a test's worker runs them with another test's settings (a usage test once counted
the telemetry test's replies). Read from the sources, as `database_url(redis_url, N)`
calls, with N a literal or a module constant."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).parent
STARTS_WORKERS = re.compile(r"\b(start_worker|start_workers|spawn_worker|worker_argv)\(")


# How a module names a database: database_url(url, N), url.rsplit("/", 1)[0] + "/N", or
# an f-string URL ending in /{CONSTANT}.
NAMED = (
    re.compile(r"database_url\(\w+, ([A-Z_]+|\d+)\)"),
    re.compile(r'rsplit\("/", 1\)\[0\] \+ "/(\d+)"'),
    re.compile(r'/\{([A-Z_]+)\}"'),
)


def databases(text: str) -> set[int]:
    constants = dict(re.findall(r"^([A-Z_]+) = (\d+)\b", text, re.M))
    found = set()
    for pattern in NAMED:
        for arg in pattern.findall(text):
            found.add(int(arg if arg.isdigit() else constants[arg]))
    return found


def test_modules_that_start_workers_have_a_database_each() -> None:
    """A database a module's own workers use is no other module's, workers or not (one
    that flushes it, or counts what is in it, would see theirs)."""
    users: dict[int, list[str]] = defaultdict(list)
    with_workers: set[int] = set()
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__):
            continue
        text = path.read_text()
        for db in databases(text):
            users[db].append(str(path.relative_to(TESTS)))
            if STARTS_WORKERS.search(text):
                with_workers.add(db)
    assert len(with_workers) >= 10, users  # the scan finds them
    assert all(0 < db < 32 for db in users), users  # 0 is the shared one; 32 exist
    assert {db: users[db] for db in with_workers if len(users[db]) > 1} == {}
