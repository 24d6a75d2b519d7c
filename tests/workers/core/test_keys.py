"""Every Redis key of the platform is named in workers/core/keys.py and nowhere else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from workers.core import keys

ROOT = Path(__file__).resolve().parents[3]
STDLIB = sys.stdlib_module_names
# A hash salt that happens to read like a key: no Redis key is made from it.
NOT_KEYS = {"service/auth.py": ['f"claw:api-key:{token}"']}


def test_no_module_but_the_keys_module_spells_a_claw_key() -> None:
    offenders = []
    for path in [*ROOT.glob("service/**/*.py"), *ROOT.glob("workers/**/*.py"),
                 *ROOT.glob("workers/**/*.lua")]:  # fmt: skip
        relative = path.relative_to(ROOT).as_posix()
        if relative == "workers/core/keys.py":
            continue
        text = path.read_text()
        for allowed in NOT_KEYS.get(relative, []):
            text = text.replace(allowed, "")
        offenders += [f"{relative}: {m.group(0)}" for m in re.finditer(r"[\"']claw:[^\"']*", text)]
    assert offenders == []


# Importing the keys pulls in no Redis client, Celery or settings: nothing that could
# connect, read the environment or register a signal receiver.
CORE = {"workers", "workers.core", "workers.core.keys", "workers.core.ownership",
        "workers.core.headers"}  # fmt: skip
PROBE = """
import sys
before = set(sys.modules)
import workers.core.keys
print("\\n".join(sorted(set(sys.modules) - before)))
"""


def test_the_keys_module_imports_only_the_standard_library_and_the_core() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "workers.core.keys" in loaded
    assert [m for m in loaded if m not in CORE and m.partition(".")[0] not in STDLIB] == []


BUILDERS = [
    keys.session_key("d"), keys.ticket_key("d"), keys.idempotency_key("d"),
    keys.failed_key(1), keys.deferrals_key("t"), *keys.rate_limit_keys("ai", "o"),
    keys.conversation_key("alice", "c", "turns"), keys.docs_key("alice", "kb"),
    keys.version_key("alice", "kb", "doc", "v1"), keys.inbox_key("alice"),
    keys.delivered_key("alice"), keys.task_key("t"), keys.chunks_key("t"), keys.index_key(),
    keys.index_key("owner", "alice"), keys.owner_state_key("alice", "SUCCESS"),
    keys.counts_key(), keys.done_key(1), keys.HEALTH_REPORT_KEY, keys.WORKERS_HASH,
    keys.WORKERS_SEEN, keys.SESSION_ENDED_CHANNEL, keys.FEED_STREAM, keys.REDBEAT_PREFIX,
]  # fmt: skip


@pytest.mark.parametrize("key", BUILDERS)
def test_every_key_is_under_the_claw_prefix(key: str) -> None:
    assert key.startswith(keys.PREFIX)


@pytest.mark.parametrize(
    "one,other", [("a:b", "a"), ("a", "a:b"), ("a%3Ab", "a:b"), ("@system", None), ("x", None)]
)
def test_two_owners_resources_never_share_a_key(one: str, other: str | None) -> None:
    ids = ["c", "b:c", "kb", "kb:docs"]
    mine = {keys.conversation_key(one, i, "turns") for i in ids}
    mine |= {keys.docs_key(one, i) for i in ids}
    theirs = {keys.conversation_key(other, i, "turns") for i in ids}
    theirs |= {keys.docs_key(other, i) for i in ids}
    assert not mine & theirs


@pytest.mark.parametrize("one,other", [("x:delivered", "x"), ("a:b", "a"), ("a%3Ab", "a:b")])
def test_two_users_inboxes_never_share_a_key(one: str, other: str) -> None:
    mine = {keys.inbox_key(one), keys.delivered_key(one)}
    assert not mine & {keys.inbox_key(other), keys.delivered_key(other)}
