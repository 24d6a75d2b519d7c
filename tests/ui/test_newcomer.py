"""What a newcomer meets in the dashboard (issue 15), in headless Chromium against the real
gateway, worker and live feed: the form's defaults, retries that link to their retry, a
cancelled task's detail, filters in the URL and deep links, development mode, and why
tasks wait when no worker consumes their queue."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.api import ADMIN, ALICE
from tests.support.processes import base_env, database_url
from tests.support.waiting import wait_until
from tests.ui.conftest import SCREENSHOTS
from tests.ui.test_dashboard import log_in, still_same_page, submit_from_form, task_row

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ALICE}"}


def status_of(page: Page, task_id: str) -> dict[str, Any]:
    return page.request.get(f"/api/v1/tasks/status/{task_id}", headers=AUTH).json()


def test_an_empty_priority_submits_the_default(page: Page) -> None:
    log_in(page, ALICE)
    page.get_by_test_id("new-task").click()
    page.get_by_test_id("new-task-priority").fill("")
    task_id = submit_from_form(page, "no priority given", delay=300)
    assert status_of(page, task_id)["priority"] == 5
    task_row(page, task_id).locator("[data-action=cancel]").click()
    expect(task_row(page, task_id)).to_have_attribute("data-state", "REVOKED")
    assert not page.errors


def test_a_cancelled_task_reads_well_and_its_retry_is_linked(page: Page) -> None:
    log_in(page, ALICE)
    task_id = submit_from_form(page, "cancel then retry me", delay=300)
    row = task_row(page, task_id)
    row.click()
    detail = page.get_by_test_id("detail")
    # Not run yet: when it runs, in words, and no worker.
    expect(detail).to_contain_text("Runs at")
    expect(detail).to_contain_text(re.compile(r"in \d+m"))
    expect(detail).not_to_contain_text("Worker")
    expect(detail).not_to_contain_text("+00:00")
    row.locator("[data-action=cancel]").click()
    expect(detail.get_by_test_id("detail-error")).to_have_text("cancelled by alice")
    # The deep link of the open task is the page's URL; a reload reads the same.
    expect(page).to_have_url(re.compile(rf"/tasks/{task_id}$"))
    page.reload()
    expect(page.get_by_test_id("detail").get_by_test_id("detail-error")).to_have_text(
        "cancelled by alice"
    )

    row = task_row(page, task_id)
    row.locator("[data-action=retry]").click()
    link = row.locator("[data-action=show-retry]")
    expect(link).to_contain_text("Retried")
    expect(row.locator("[data-action=retry]")).to_have_count(0)
    retried_as = status_of(page, task_id)["retried_as"]
    # The list itself carries the lineage: after a reload, still a link, not a Retry.
    page.goto("/")
    row = task_row(page, task_id)
    expect(row.locator("[data-action=show-retry]")).to_be_visible()
    expect(row.locator("[data-action=retry]")).to_have_count(0)
    row.locator("[data-action=show-retry]").click()
    expect(page.get_by_test_id("detail-id")).to_have_text(retried_as)
    assert not page.errors


def test_filters_match_parts_of_names_live_in_the_url_and_say_when_nothing_matches(
    page: Page,
) -> None:
    log_in(page, ALICE)
    task_id = submit_from_form(page, "find me by a part of my name", delay=300)
    page.get_by_test_id("filter-name").fill("GENERATE")
    expect(page).to_have_url(re.compile(r"\?name=GENERATE$"))
    expect(task_row(page, task_id)).to_be_visible()
    page.reload()  # the filter is in the URL
    expect(page.get_by_test_id("filter-name")).to_have_value("GENERATE")
    expect(task_row(page, task_id)).to_be_visible()

    page.get_by_test_id("filter-name").fill("no-task-is-called-this")
    empty = page.locator("#tasks-empty")
    expect(empty).to_contain_text("No tasks match these filters")
    page.get_by_test_id("clear-filters").click()
    expect(task_row(page, task_id)).to_be_visible()

    # A task id in the search box opens it; a deep link does too.
    page.get_by_test_id("filter-name").fill(task_id)
    expect(page.get_by_test_id("detail-id")).to_have_text(task_id)
    page.goto(f"/tasks/{task_id}")
    expect(page.get_by_test_id("detail-id")).to_have_text(task_id)
    page.goto("/tasks/00000000-0000-4000-8000-000000000000")
    expect(page.get_by_test_id("detail-missing")).to_have_text("No such task")
    page.goto(f"/tasks/{task_id}")
    expect(page.get_by_test_id("detail-id")).to_have_text(task_id)
    task_row(page, task_id).locator("[data-action=cancel]").click()
    assert not page.errors


@pytest.fixture(scope="module")
def dev_gateway(redis_url, log_dir) -> Iterator[Any]:
    """Development mode (no API_KEYS) on a database no worker consumes."""
    from tests.support.processes import start_gateway

    gateway = start_gateway(database_url(redis_url, 8), log_dir, env={"API_KEYS": ""})
    yield gateway
    gateway.stop()


def test_development_mode_and_a_missing_worker_are_explained(browser, dev_gateway) -> None:
    context = browser.new_context(base_url=dev_gateway.base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto("/")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        expect(page.get_by_test_id("dev-banner")).to_contain_text("Development mode")
        expect(page.get_by_test_id("logout")).to_be_hidden()
        # No worker runs here: the dashboard says why tasks wait, and on the task itself.
        expect(page.get_by_test_id("queue-banner")).to_contain_text("No worker is running")
        task_id = submit_from_form(page, "who will run me?")
        task_row(page, task_id).click()
        expect(page.get_by_test_id("detail-queue-state")).to_contain_text(
            "No worker consumes ai_high_priority"
        )
        page.get_by_test_id("chat-input").fill("anyone there?")
        page.get_by_test_id("chat-send").click()
        expect(page.get_by_test_id("chat-message").last).to_contain_text("no worker")
        health = page.request.get("/healthz").json()
        assert health["status"] == "degraded" and "no live workers" in health["reasons"]
        assert not errors
    finally:
        context.close()


def vectorize(page: Page, kb_id: str, document_id: str, text: str) -> None:
    body = {"kb_id": kb_id, "document_id": document_id, "text": text, "title": document_id}
    reply = page.request.post("/api/v1/tasks/knowledge/vectorize", data=body, headers=AUTH)
    assert reply.status == 202
    task_id = reply.json()["task_id"]
    wait_until(lambda: status_of(page, task_id)["status"] == "SUCCESS", timeout=20,
               what=f"{document_id} vectorized")  # fmt: skip


def test_knowledge_bases_are_listed_deleted_picked_in_the_chat_and_cited(page: Page) -> None:
    kb_id = "ui-cites"
    log_in(page, ALICE)
    vectorize(page, kb_id, "platypus", "The platypus is a mammal that lays eggs. " * 5)
    vectorize(page, kb_id, "celery", "Celery workers take tasks from Redis queues. " * 5)
    page.goto("/")
    base = page.locator(f'[data-testid=kb-base][data-kb-id="{kb_id}"]')
    expect(base).to_contain_text("2 documents")

    # A nonsense query finds nothing (a relevance floor), rather than a 0.000 match.
    page.get_by_test_id("kb-id").fill(kb_id)
    page.get_by_test_id("kb-query").fill("xyzzy")
    page.get_by_test_id("kb-query").press("Enter")
    expect(page.get_by_test_id("kb-results")).to_contain_text("matches")

    # The chat answers from the chosen knowledge base and its citations open the passages.
    page.get_by_test_id("chat-kb").select_option(kb_id)
    page.get_by_test_id("chat-input").fill("which mammal lays eggs")
    page.get_by_test_id("chat-send").click()
    message = page.get_by_test_id("chat-message").last
    expect(message).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
    citation = message.get_by_test_id("citation").first
    expect(citation).to_contain_text("platypus")
    citation.click()
    expect(message.get_by_test_id("citation-passage")).to_contain_text("lays eggs")

    # A document is deleted from the list; the base shows what is left.
    page.on("dialog", lambda dialog: dialog.accept())
    base.locator("summary").click()
    documents = base.get_by_test_id("kb-document")
    expect(documents).to_have_count(2)
    documents.filter(has_text="celery").locator("[data-action=delete-document]").click()
    expect(base).to_contain_text("1 document")
    assert not page.errors


def test_housekeeping_tasks_are_hidden_unless_asked_for(page: Page, ui_redis_url: str) -> None:
    publish = (
        "from workers.celery_app import celery_app;"
        "print(celery_app.send_task('check_task_health').id)"
    )
    sent = subprocess.run(
        [sys.executable, "-c", publish], env=base_env(ui_redis_url), capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    task_id = sent.stdout.strip().splitlines()[-1]
    admin = {"Authorization": f"Bearer {ADMIN}"}
    wait_until(
        lambda: page.request.get(f"/api/v1/tasks/status/{task_id}", headers=admin).json()
        .get("status") == "SUCCESS", timeout=30, what="the health check run",
    )  # fmt: skip
    listed = page.request.get("/api/v1/tasks/list", headers=admin).json()["tasks"]
    assert task_id not in {t["task_id"] for t in listed}
    log_in(page, ADMIN)
    expect(page.get_by_test_id("tasks")).to_be_visible()
    expect(task_row(page, task_id)).to_have_count(0)
    page.get_by_test_id("filter-system").check()
    expect(task_row(page, task_id)).to_be_visible()
    expect(page).to_have_url(re.compile(r"system=true"))
    assert not page.errors


def test_the_dashboard_fits_a_phone(browser, ui_gateway) -> None:
    """390 px wide: no sideways scrolling, every field and action of a task on screen, the
    user's name, the chart's axes, and the chat within reach; screenshots saved."""
    context = browser.new_context(
        base_url=ui_gateway.base_url, viewport={"width": 390, "height": 844},
        device_scale_factor=2, is_mobile=True, has_touch=True,
    )  # fmt: skip
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        log_in(page, ADMIN)  # (an admin's dashboard has the throughput chart)
        task_id = submit_from_form(page, "seen on a phone", delay=300)
        row = task_row(page, task_id)
        expect(row).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        cancel = row.locator("[data-action=cancel]")
        box = cancel.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        for cell in row.locator("td").all()[2:7]:
            if cell.inner_text().strip():
                cell_box = cell.bounding_box()
                assert cell_box is not None and cell_box["x"] + cell_box["width"] <= 391
        expect(page.locator(".who-name")).to_be_visible()
        expect(page.locator("#chart .axis").first).to_be_visible()
        chat_top = page.get_by_test_id("chat").bounding_box()
        assert chat_top is not None and chat_top["y"] < 844 * 3.5  # one or two swipes away
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "dashboard-phone.png", full_page=True)
        cancel.click()
        expect(row).to_have_attribute("data-state", "REVOKED")
        assert not errors
    finally:
        context.close()


def test_the_workers_card_stays_live_and_the_api_page_is_served(page: Page) -> None:
    """Heartbeats carry the worker's counts to the dashboard (no reload); /api/docs is an
    interactive API page served by the gateway itself."""
    log_in(page, ADMIN)
    worker = page.get_by_test_id("workers").locator("li.worker").first
    expect(worker.get_by_test_id("worker-meta")).to_contain_text("processed")

    def processed() -> int:
        found = re.search(r"(\d+) processed", worker.get_by_test_id("worker-meta").inner_text())
        return int(found.group(1)) if found else -1

    before = processed()
    task_id = submit_from_form(page, "count me")
    expect(task_row(page, task_id)).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
    wait_until(lambda: processed() > before, timeout=15, what="the live processed count")
    expect(worker.get_by_test_id("worker-seen")).to_have_text(re.compile(r"just now|\d+s ago"))
    assert still_same_page(page)

    page.goto("/api/docs")
    docs = page.get_by_test_id("api-docs")
    expect(docs).to_contain_text("/api/v1/tasks/status/{task_id}")
    expect(docs).to_contain_text("/api/v1/tasks/{task_id}/stream")
    assert not page.errors


def test_a_worker_shut_down_from_the_dashboard_is_shown_leaving_at_once(
    page: Page, ui_redis_url: str, log_dir
) -> None:
    from tests.support.processes import start_worker

    leaving = start_worker(ui_redis_url, log_dir, name="leaving", queues="tests_leaving")
    try:
        log_in(page, ADMIN)
        card = page.locator(f'li.worker[data-hostname="{leaving.hostname}"]')
        expect(card).to_be_visible()
        page.on("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Shut down").click()
        # At once: no controls, and what the shutdown did (a toast), then offline.
        expect(card.get_by_test_id("worker-seen")).to_have_text(re.compile(r"stopping…|offline"))
        expect(card.get_by_role("button", name="Shut down")).to_have_count(0)
        expect(page.locator(".toast")).to_contain_text(leaving.hostname)
        expect(card.get_by_test_id("worker-seen")).to_have_text("offline", timeout=30_000)
        assert not page.errors
    finally:
        leaving.stop()


def test_new_task_vectorizes_into_the_knowledge_panels_base(page: Page) -> None:
    log_in(page, ALICE)
    page.get_by_test_id("kb-id").fill("ui-panel-base")
    page.get_by_test_id("new-task").click()
    page.get_by_test_id("new-task-kind").select_option("vectorize")
    page.get_by_test_id("new-task-text").fill("Otters hold hands while they sleep.")
    with page.expect_response("**/api/v1/tasks/knowledge/vectorize") as response:
        page.get_by_test_id("new-task-submit").click()
    assert response.value.status == 202
    assert response.value.request.post_data_json["kb_id"] == "ui-panel-base"
    task_id = response.value.json()["task_id"]
    expect(task_row(page, task_id)).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
    assert not page.errors


def test_a_tasks_trace_id_is_in_its_detail(page: Page, ui_redis_url: str) -> None:
    """With tracing on (OTEL_*) the gateway stores the submission's trace id on the record
    (tests/service/test_telemetry.py); the task's detail shows it to look the trace up."""
    import redis

    from workers.core.keys import task_key

    log_in(page, ALICE)
    task_id = submit_from_form(page, "traced", delay=300)
    detail = page.get_by_test_id("detail")
    task_row(page, task_id).click()
    expect(detail).not_to_contain_text("Trace ID")  # tracing is off here
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    client = redis.Redis.from_url(ui_redis_url, decode_responses=True)
    client.hset(task_key(task_id), "trace_id", trace)  # as a traced submission has it
    client.close()
    page.goto(f"/tasks/{task_id}")
    expect(detail).to_contain_text("Trace ID")
    expect(detail).to_contain_text(trace)
    assert not page.errors
