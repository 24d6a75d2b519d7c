"""The web UI in headless Chromium against the real gateway, worker and live feed.

Every wait is Playwright's polling `expect` with a deadline; no test reloads the page
after logging in, so what changes on screen came over the websocket.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.api import ADMIN, ALICE
from tests.support.processes import base_env
from tests.support.waiting import wait_until
from tests.ui.conftest import SCREENSHOTS

pytestmark = pytest.mark.slow

GENERATE = "**/api/v1/tasks/ai/generate"


def log_in(page: Page, key: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    # Set after login: if the page ever reloads, this is gone.
    page.evaluate("window.__samePage = true")


def still_same_page(page: Page) -> bool:
    return page.evaluate("window.__samePage === true")


def submit_from_form(page: Page, text: str, delay: int = 0) -> str:
    form = page.get_by_test_id("new-task-form")
    if not form.is_visible():
        page.get_by_test_id("new-task").click()
    page.get_by_test_id("new-task-text").fill(text)
    page.get_by_test_id("new-task-delay").fill(str(delay))
    with page.expect_response(GENERATE) as response:
        page.get_by_test_id("new-task-submit").click()
    assert response.value.status == 202
    return response.value.json()["task_id"]


def task_row(page: Page, task_id: str) -> Any:
    return page.locator(f'[data-testid=tasks] tr[data-task-id="{task_id}"]')


def test_login_with_an_api_key_and_logout(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_test_id("api-key").fill("not-a-key")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("not valid")

    page.get_by_test_id("api-key").fill(ALICE)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("principal")).to_contain_text("alice")
    expect(page.get_by_test_id("principal")).to_contain_text("user")
    # The session lives in an HttpOnly cookie the page's scripts cannot read.
    cookie = next(c for c in page.context.cookies() if c["name"] == "claw_session")
    assert cookie["httpOnly"] and not page.evaluate("document.cookie.includes('claw_session')")
    # Worker control is for admins: a user's dashboard has no worker panel.
    expect(page.get_by_test_id("workers")).to_be_hidden()
    expect(page.get_by_test_id("count-success")).to_have_text(re.compile(r"^\d+$"))

    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    assert not page.errors


def test_a_task_submitted_from_the_ui_turns_success_live(page: Page) -> None:
    log_in(page, ADMIN)
    expect(page.get_by_test_id("workers")).to_contain_text("ui-")
    task_id = submit_from_form(page, "Hello from the dashboard")

    row = task_row(page, task_id)
    expect(row).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
    expect(row).to_contain_text("generate_ai_response")
    assert still_same_page(page)

    row.click()
    detail = page.get_by_test_id("detail")
    expect(detail.get_by_test_id("detail-id")).to_have_text(task_id)
    expect(detail.get_by_test_id("detail-result")).to_contain_text("Echo: Hello from the dashboard")
    expect(detail).to_contain_text("user_message")  # the arguments
    expect(detail).to_contain_text("ran")  # the timings
    assert not page.errors


def test_a_queued_task_is_cancelled_from_the_ui(page: Page) -> None:
    log_in(page, ALICE)
    task_id = submit_from_form(page, "cancel me before I run", delay=120)
    row = task_row(page, task_id)
    expect(row).to_have_attribute("data-state", "PENDING")

    row.locator("[data-action=cancel]").click()
    expect(row).to_have_attribute("data-state", "REVOKED")
    expect(row.locator("[data-action=cancel]")).to_have_count(0)
    row.click()
    expect(page.get_by_test_id("detail")).to_contain_text("Cancelled")
    assert still_same_page(page)
    assert not page.errors


def test_an_ai_reply_streams_into_the_chat(page: Page) -> None:
    log_in(page, ADMIN)
    # The reply echoes the question: markup in it must arrive as text, never as HTML.
    page.get_by_test_id("chat-input").fill(
        '[slow] Tell me about <img src=x onerror="window.__xss=1">'
    )
    page.get_by_test_id("chat-send").click()

    message = page.get_by_test_id("chat-message").last
    # Mid-stream: part of the reply is on screen while the task is still running.
    streaming = page.locator("[data-testid=chat-message][data-state=STARTED]")
    expect(streaming.get_by_test_id("chat-reply")).to_contain_text("Echo: [slow] Tell me")
    expect(message).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
    expect(message.get_by_test_id("chat-reply")).to_contain_text("more39")
    expect(message.get_by_test_id("chat-reply")).to_contain_text(
        '<img src=x onerror="window.__xss=1">'
    )
    assert page.locator("[data-testid=chat] img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert int(message.get_attribute("data-chunks") or 0) > 10
    expect(message.get_by_test_id("chat-tokens")).to_have_text(re.compile(r"^[1-9]\d* tokens$"))
    expect(message.get_by_test_id("chat-cost")).to_have_text(re.compile(r"^\$\d+\.\d+$"))

    # The reply's tokens are in the usage card (read when the dashboard loads): its model
    # in the table, a bar in this hour.
    page.reload()
    usage = page.get_by_test_id("usage-models")
    expect(usage.locator("table")).to_be_visible()
    expect(usage).to_contain_text(re.compile(r"\d+ tokens|\d"))
    assert page.get_by_test_id("usage-chart").locator("rect").count() >= 1

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True)
    assert not page.errors


def test_after_a_dropped_connection_the_feed_resumes_what_was_missed(page: Page) -> None:
    log_in(page, ADMIN)
    page.evaluate("window.claw.feed.drop(3000)")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")

    # Submitted and finished elsewhere while this page is offline.
    auth = {"Authorization": f"Bearer {ADMIN}"}
    reply = page.request.post(
        "/api/v1/tasks/ai/generate",
        data={"conversation_id": "ui-resume", "user_message": "while you were away"},
        headers=auth,
    )
    assert reply.status == 202
    task_id = reply.json()["task_id"]
    status_url = f"/api/v1/tasks/status/{task_id}"
    wait_until(
        lambda: page.request.get(status_url, headers=auth).json()["status"] == "SUCCESS",
        timeout=2.5, what="the task to finish while the page is offline",
    )  # fmt: skip
    assert page.evaluate("window.claw.feed.state") == "reconnecting"

    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    expect(task_row(page, task_id)).to_have_attribute("data-state", "SUCCESS")
    assert page.evaluate("window.claw.feed.resumes") == 1
    assert still_same_page(page)
    assert not page.errors


def test_a_document_is_vectorized_with_progress_and_found_by_search(
    page: Page, tmp_path: Path
) -> None:
    paragraphs = [
        "The platypus is a mammal that lays eggs.",
        "Celery workers take tasks from Redis queues.",
        "A progress bar shows how far the embedding got.",
        "Knowledge bases are searched by similarity.",
    ]
    document = tmp_path / "field-notes.txt"
    document.write_text("\n\n".join(p * 4 for p in paragraphs))
    log_in(page, ALICE)

    page.get_by_test_id("kb-id").fill("ui-notes")
    page.get_by_test_id("kb-file").set_input_files(document)
    page.get_by_test_id("kb-vectorize").click()
    job = page.get_by_test_id("kb-job").first
    expect(job).to_have_attribute("data-state", "SUCCESS")
    expect(job.get_by_test_id("progress")).to_have_attribute("aria-valuenow", "100")
    expect(job).to_contain_text(re.compile(r"indexed \d+ chunks into ui-notes"))
    assert int(job.get_attribute("data-progress-events") or 0) >= 2

    page.get_by_test_id("kb-query").fill("which mammal lays eggs")
    page.get_by_test_id("kb-query").press("Enter")
    first = page.get_by_test_id("kb-results").locator("li").first
    expect(first).to_contain_text("platypus")
    expect(first).to_contain_text("field-notes.txt")
    assert still_same_page(page)
    assert not page.errors


def test_a_task_over_its_rate_limit_shows_as_waiting(page: Page, ui_redis_url: str) -> None:
    """A user's own task (`rate_limit="3/m"`, published from Python as alice): the 4th of 4
    waits for the next minute; the dashboard says so and when it runs, not a retry."""
    log_in(page, ALICE)
    key = f"tests:doc:ui-{uuid.uuid4().hex[:8]}"
    publish = (
        "import json, sys; from tests.support import document_tasks as d; print(json.dumps(["
        "d.limited.apply_async(args=[sys.argv[1]], queue='default',"
        " headers={'claw_owner': 'alice'}).id for _ in range(4)]))"
    )
    sent = subprocess.run(
        [sys.executable, "-c", publish, key], env=base_env(ui_redis_url),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    task_ids = json.loads(sent.stdout)
    auth = {"Authorization": f"Bearer {ALICE}"}

    def waiting() -> list[dict]:
        bodies = [
            page.request.get(f"/api/v1/tasks/status/{t}", headers=auth).json() for t in task_ids
        ]
        return [b for b in bodies if b.get("waiting_reason")]

    held = wait_until(waiting, timeout=30, what="one of the four to wait")
    assert len(held) == 1 and held[0]["status"] == "PENDING" and held[0]["deferrals"] >= 1

    row = task_row(page, held[0]["task_id"])
    expect(row).to_have_attribute("data-state", "PENDING")
    row.click()
    shown = page.get_by_test_id("detail").get_by_test_id("detail-waiting")
    expect(shown).to_contain_text("rate limit 3/60s reached")
    expect(shown).to_contain_text("runs at")
    row.locator("[data-action=cancel]").click()  # it would run a minute later otherwise
    expect(row).to_have_attribute("data-state", "REVOKED")
    expect(page.get_by_test_id("detail-waiting")).to_have_count(0)
    assert not page.errors
