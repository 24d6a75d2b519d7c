"""Schemathesis against the running gateway's OpenAPI document: every operation, with an
admin key, a user key and no key.

Each generated case is sent with each key and without one (one generation, three runs).
Checks on every response: no 5xx; status codes, content types, headers and bodies as
documented; data the schema forbids is refused with a 4xx; an operation that needs a key
refuses the same request without one or with a wrong one. Without a key, every protected
operation answers 401.

The gateway runs on a Redis database no worker uses, so the worker control operations
(shutdown, pool restart) reach nobody and are fuzzed with an admin key like the rest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi import checks as oas

from tests.support.api import ADMIN, ALICE

pytestmark = pytest.mark.slow

EXAMPLES = 15  # per operation and mode: each field's edges, and fast enough for CI
# One inspect broadcast costs its 1 s timeout: fewer examples, it has no parameters.
EXAMPLES_BY_OPERATION = {"list_workers": 2}
SPEC = "/api/v1/openapi.json"
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE

CHECKS = [
    schemathesis.checks.not_a_server_error,
    oas.status_code_conformance,
    oas.content_type_conformance,
    oas.response_headers_conformance,
    oas.response_schema_conformance,
    oas.negative_data_rejection,
]
AUTHENTICATED_CHECKS = [*CHECKS, oas.ignored_auth]
# A batch's body is JSON Lines, described as a string: sent as the text generated.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def _operations(base_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(
        f"{base_url}{SPEC}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    return [result.ok() for result in schema.get_all_operations()]


def _operation_id(op: Any) -> str:
    return op.definition.raw["operationId"]


def _is_public(op: Any) -> bool:
    return "security" not in op.definition.raw


def _validation_error(response: Any) -> bool:
    try:
        return "details" in response.json()
    except ValueError:
        return False


def _short_wait(case: Any) -> bool:
    """A valid `wait` holds the answer until the task ends, and no worker runs here: keep
    it short (its range is still fuzzed by the invalid cases)."""
    wait = (case.query or {}).get("wait")
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return False
    if 0 < seconds <= 60:
        case.query["wait"] = 0.1
        return True
    return False


# Each generated case is sent with every key (and with none): one generation, three runs.
KEYS = {"admin": ADMIN, "user": ALICE, "none": None}


@dataclass
class Run:
    """What one key met: failures, and the statuses answered per operation."""

    failures: list[str] = field(default_factory=list)
    seen: dict[str, Counter] = field(default_factory=dict)


def _send(
    case: Any, op: Any, mode: Any, token: str | None, altered: bool,
    session: requests.Session, base_url: str, run: Run,
) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else None
    checks = AUTHENTICATED_CHECKS if token else CHECKS
    # The key is added to every call: a case made invalid only by leaving it out (or by a
    # wait we shortened) is valid by the time it is sent.
    altered = altered or bool(token and "Authorization" not in (case.headers or {}))
    label = f"{op.label} [{mode.value}]"
    statuses = run.seen.setdefault(op.label, Counter())
    try:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
        statuses[response.status_code] += 1
        # 413 (body over 1 MiB) is a rejection too; schemathesis' list lacks it.
        skip_rejection = response.status_code == 413 or (mode == NEGATIVE and altered)
        applied = (
            [c for c in checks if c is not oas.negative_data_rejection]
            if skip_rejection else checks
        )  # fmt: skip
        case.validate_response(
            response, checks=applied, headers=headers,
            transport_kwargs={"base_url": base_url, "session": session, "timeout": 15},
        )  # fmt: skip
    except (Exception, BaseExceptionGroup) as exc:
        run.failures.append(f"{label}: {type(exc).__name__}: {exc}")
        return
    # Only the HTTP layer answers before auth: a request line it cannot parse (over
    # 8 KiB) or a URL it cannot decode. A validation error (with `details`) before
    # authentication would be a bug.
    parsed = not (response.status_code == 400 and not _validation_error(response))
    if token is None and not _is_public(op) and parsed and response.status_code != 401:
        run.failures.append(
            f"{label}: answered {response.status_code} without a key: {response.text[:200]}"
        )


def _fuzz(
    op: Any, mode: Any, session: requests.Session, base_url: str, runs: dict[str, Run]
) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_BY_OPERATION.get(_operation_id(op), EXAMPLES),
        deadline=None, database=None, derandomize=True, print_blob=False,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    def run(case: Any) -> None:
        altered = _short_wait(case)
        for name, token in KEYS.items():
            _send(case, op, mode, token, altered, session, base_url, runs[name])

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid: an operation without parameters or body


# The operations in shards, each its own test: xdist runs them side by side.
SHARDS = 4


def _fuzz_shard(base_url: str, shard: int) -> tuple[list[str], dict[str, Run]]:
    """Every operation of the shard fuzzed once, each case sent with each key."""
    runs = {name: Run() for name in KEYS}
    ops = sorted(_operations(base_url), key=_operation_id)[shard::SHARDS]
    with requests.Session() as session:
        for op in ops:
            for mode in (POSITIVE, NEGATIVE):
                _fuzz(op, mode, session, base_url, runs)
    for name, run in runs.items():
        run.failures = list(dict.fromkeys(run.failures))
        for label, statuses in run.seen.items():
            print(f"{name:5} {label:48} {dict(sorted(statuses.items()))}")
    return [_operation_id(op) for op in ops], runs


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_operation_conforms_with_a_key_and_refuses_without(isolated_gateway, shard) -> None:
    ops, runs = _fuzz_shard(isolated_gateway.base_url, shard)
    assert isolated_gateway.alive()
    for token in ("admin", "user", "none"):
        failures, seen = runs[token].failures, runs[token].seen
        assert not failures, f"{token}:\n" + "\n\n".join(failures)
        everything = sum(seen.values(), Counter())
        assert not [s for s in everything if s >= 500], (token, everything)
    # Every operation was fuzzed with every key.
    assert all(len(run.seen) == len(ops) for run in runs.values()), ops
    # The fuzzer got past validation (accepted submissions) and was refused by it.
    for label, statuses in runs["admin"].seen.items():
        if label.startswith("POST /api/v1/tasks/") and 202 in statuses:
            assert 400 in statuses, (label, statuses)
    if "submit_ai_generate" in ops:
        for token in ("admin", "user"):
            submitted = runs[token].seen["POST /api/v1/tasks/ai/generate"]
            assert submitted[202] > 0 and submitted[400] > 0, (token, submitted)
    if "task_stats" in ops:
        assert set(runs["none"].seen["GET /api/v1/tasks/stats"]) == {401}


def test_oversized_body_is_refused_as_documented(isolated_gateway) -> None:
    body = {"document_id": "d", "kb_id": "kb", "text": "x" * (1024 * 1024 + 1)}
    response = requests.post(
        f"{isolated_gateway.base_url}/api/v1/tasks/knowledge/vectorize", json=body,
        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=15,
    )  # fmt: skip
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    spec = requests.get(
        f"{isolated_gateway.base_url}{SPEC}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=15,
    ).json()
    assert "413" in spec["paths"]["/api/v1/tasks/knowledge/vectorize"]["post"]["responses"]


def test_worker_shutdown_with_no_live_worker_sends_nothing(isolated_gateway) -> None:
    """`all=true` with nobody live must not broadcast: Celery reads an empty destination
    list as every worker on the broker."""
    response = requests.post(
        f"{isolated_gateway.base_url}/api/v1/tasks/workers/shutdown", params={"all": "true"},
        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=15,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {"action": "shutdown", "replies": {}}
