"""The `claw` command line, run as a process against the real gateway: what it prints,
and its exit codes (0 done, 1 a task that failed or was cancelled, 2 an error answer)."""

from __future__ import annotations

import json
import uuid

from tests.support.api import ALICE, BOB
from tests.support.fake_openai import Fault


def test_ai_streams_the_reply_and_tasks_list_status_and_watch_show_it(claw) -> None:
    asked = claw("ai", "Tell me [slow] please", "--conversation", "c-cli")
    assert asked.returncode == 0, asked.stderr
    reply = asked.stdout.removesuffix("\n")  # the reply as streamed, then a new line
    assert reply.startswith("Echo: Tell me [slow] please") and reply.endswith("more29 ")
    assert "[SUCCESS]" in asked.stderr
    task_id = asked.stderr.split("[task ", 1)[1].split("]", 1)[0]

    assert claw("ai", "A second one").returncode == 0
    listed = claw("tasks", "list", "--json", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert task_id in [t["task_id"] for t in page["tasks"]] and "next_cursor" in page
    table = claw("tasks", "list", "--status", "SUCCESS", "--name", "generate_ai", "--limit", "1")
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["task_id", "status", "name", "queue", "submitted_at", "runtime"]
    assert row.split()[1:3] == ["SUCCESS", "generate_ai_response"]
    assert "more: --cursor " in table.stderr  # a full page names the next one

    status = claw("tasks", "status", task_id)
    assert status.returncode == 0
    body = json.loads(status.stdout)
    assert body["status"] == "SUCCESS" and body["result"]["response"] == reply

    watched = claw("tasks", "watch", task_id)  # a finished task: its events replayed
    assert watched.returncode == 0 and watched.stdout == reply
    assert watched.stderr.splitlines()[-1] == "[SUCCESS]"


def test_a_failed_task_exits_1_with_its_error(claw, fake_openai) -> None:
    marker = f"refuse-{uuid.uuid4().hex[:6]}"
    fake_openai.fail(marker, Fault(status=400, message="this model is not for you"))
    failed = claw("ai", f"question {marker}")
    assert failed.returncode == 1
    assert "[FAILURE]" in failed.stderr and "this model is not for you" in failed.stderr
    task_id = failed.stderr.split("[task ", 1)[1].split("]", 1)[0]
    watched = claw("tasks", "watch", task_id)
    assert watched.returncode == 1 and "[FAILURE]" in watched.stderr


def test_cancel_retry_and_watch_a_revoked_task(claw, alice) -> None:
    task = alice.generate("c-cli", "later", countdown=600)
    cancelled = claw("tasks", "cancel", task["task_id"])
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "REVOKED"
    watched = claw("tasks", "watch", task["task_id"])
    assert watched.returncode == 1 and "[REVOKED]" in watched.stderr
    retried = claw("tasks", "retry", task["task_id"])
    assert retried.returncode == 0
    assert json.loads(retried.stdout)["retried_from"] == task["task_id"]
    again = claw("tasks", "retry", task["task_id"])
    assert again.returncode == 2 and "error 409: task was already retried" in again.stderr


def test_errors_print_the_apis_message_and_exit_2(claw, alice, gateway) -> None:
    missing = claw("tasks", "status", str(uuid.uuid4()))
    assert missing.returncode == 2 and missing.stderr.strip() == "error 404: no such task"
    task = alice.generate("c-cli", "mine", countdown=600)
    assert claw("tasks", "status", task["task_id"], key=BOB).returncode == 2  # not BOB's
    anonymous = claw("tasks", "list", key="")
    assert anonymous.returncode == 2 and anonymous.stderr.startswith("error 401")
    invalid = claw("tasks", "list", "--status", "NOPE")
    assert invalid.returncode == 2 and "status" in invalid.stderr  # the details, as JSON
    no_kb = claw("ai", "grounded?", "--kb", "no-such-kb")
    assert no_kb.returncode == 2 and no_kb.stderr.startswith("error 404")
    nowhere = claw("--url", "http://127.0.0.1:9", "tasks", "list")
    assert nowhere.returncode == 2 and "cannot reach the gateway" in nowhere.stderr
    # --url and --api-key win over CLAW_URL and CLAW_API_KEY.
    flags = claw("--url", gateway.base_url, "--api-key", ALICE, "tasks", "status",
                 task["task_id"], key="")  # fmt: skip
    assert flags.returncode == 0 and json.loads(flags.stdout)["status"] == "PENDING"
    assert claw("tasks", "cancel", task["task_id"]).returncode == 0


def test_ai_with_kb_streams_a_reply_grounded_on_the_knowledge_base(
    claw, alice, fake_openai
) -> None:
    """`claw ai "question" --kb docs` on a vectorized `docs`: exit 0, the reply streamed to
    stdout, and the model was sent the document's text."""
    passage = f"Refunds are paid within 14 days of a return (policy {uuid.uuid4().hex[:8]})."
    vectorized = alice.vectorize("docs", f"refunds-{uuid.uuid4().hex[:8]}", passage)
    assert alice.wait(vectorized["task_id"], timeout=60)["status"] == "SUCCESS"
    # Three words shared with the passage: the fake's 64-dim hashed embeddings score one
    # shared word at or below 0 about 6% of the time (below the floor), three never.
    question = f"When are refunds paid after a return? {uuid.uuid4().hex[:8]}"
    asked = claw("ai", question, "--kb", "docs")
    assert asked.returncode == 0, asked.stderr
    reply = asked.stdout.removesuffix("\n")
    assert reply.startswith(f"Echo: {question}") and "[SUCCESS]" in asked.stderr
    task_id = asked.stderr.split("[task ", 1)[1].split("]", 1)[0]
    assert alice.status(task_id)["result"]["response"] == reply
    [sent] = fake_openai.chat_requests(question)
    assert passage in json.dumps(sent["messages"])
