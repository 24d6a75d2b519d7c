"""What a newcomer meets in the dashboard (issue 15), in headless Chromium against the real
gateway, worker and live feed: the form's defaults, retries that link to their retry, a
cancelled task's detail, filters in the URL and deep links, development mode, why a task
waits (no worker, its place in the queue, its ETA, its rate limit), workers leaving, the
housekeeping kept out of sight, the offline provider, and the panels within reach. Each
point is checked at 1440 px and at 390 px (a phone): `both_widths`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.api import ADMIN, ALICE, API_KEYS
from tests.support.processes import base_env, database_url
from tests.support.waiting import wait_until
from tests.ui.conftest import SCREENSHOTS, WIDTHS, both_widths, new_page
from tests.ui.test_dashboard import log_in, still_same_page, submit_from_form, task_row
from workers.runtime import registry

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ALICE}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
OFFLINE_DB = 29  # the offline provider's gateway and worker (no OPENAI_API_KEY)


def status_of(page: Page, task_id: str) -> dict[str, Any]:
    return page.request.get(f"/api/v1/tasks/status/{task_id}?explain=true", headers=AUTH).json()


def action(page: Page, task_id: str, name: str) -> Any:
    """A task's action button: in its detail when that is open (on a phone it covers the
    list), else on its row."""
    detail = page.get_by_test_id("detail")
    if detail.is_visible() and detail.get_by_test_id("detail-id").text_content() == task_id:
        return detail.locator(f".detail-actions [data-action={name}]")
    return task_row(page, task_id).locator(f"[data-action={name}]")


def send_task(redis_url: str, name: str, *args: Any, queue: str = "") -> str:
    """Publish a task as any Celery client would (another process: this one's settings are
    not the gateway's); its id."""
    publish = (
        "import json, sys; from workers.celery_app import celery_app;"
        "print(celery_app.send_task(sys.argv[1], args=json.loads(sys.argv[2]),"
        " queue=sys.argv[3] or None).id)"
    )
    sent = subprocess.run(
        [sys.executable, "-c", publish, name, json.dumps(args), queue],
        env=base_env(redis_url), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return sent.stdout.strip().splitlines()[-1]


@both_widths
def test_an_empty_priority_submits_the_default(page: Page) -> None:
    log_in(page, ALICE)
    page.get_by_test_id("new-task").click()
    page.get_by_test_id("new-task-priority").fill("")
    task_id = submit_from_form(page, "no priority given", delay=300)
    assert status_of(page, task_id)["priority"] == 5
    task_row(page, task_id).locator("[data-action=cancel]").click()
    expect(task_row(page, task_id)).to_have_attribute("data-state", "REVOKED")
    assert not page.errors


@both_widths
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
    action(page, task_id, "cancel").click()
    expect(detail.get_by_test_id("detail-error")).to_have_text("cancelled by alice")
    # The deep link of the open task is the page's URL; a reload reads the same.
    expect(page).to_have_url(re.compile(rf"/tasks/{task_id}$"))
    page.reload()
    expect(page.get_by_test_id("detail").get_by_test_id("detail-error")).to_have_text(
        "cancelled by alice"
    )

    row = task_row(page, task_id)
    action(page, task_id, "retry").click()
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


@both_widths
def test_a_task_due_later_says_a_worker_holds_it_and_counts_down(page: Page) -> None:
    log_in(page, ALICE)
    task_id = submit_from_form(page, "run me later", delay=300)
    task_row(page, task_id).click()
    why = page.get_by_test_id("detail-queue-state")
    # The worker took it at once and holds it until it is due (not "0 waiting").
    expect(why).to_contain_text("A worker holds it until it is due")
    expect(why).to_contain_text(re.compile(r"runs at \d{1,2}:\d\d:\d\d \(in [45]m \d+s\)"))
    expect(why.get_by_test_id("detail-rate")).to_have_text(
        re.compile(r"^\d+ of \d+ used in the last 60s$")
    )
    state = status_of(page, task_id)["queue_state"]
    assert state["held"] is True and state["ahead"] is None
    # The countdown ticks while the detail is open.
    countdown = why.locator(".countdown")
    expect(countdown).not_to_have_text(countdown.inner_text())
    # Whole seconds first: never "4m 60s".
    durations = page.evaluate(
        "import('/static/js/dom.js').then((dom) => [299.6, 119.5, 3725].map(dom.duration))"
    )
    assert durations == ["5m 0s", "2m 0s", "1h 2m"]
    page.keyboard.press("Escape")  # closed: its timer stops
    assert page.evaluate("window.claw.table.detail.ticker") is None
    task_row(page, task_id).locator("[data-action=cancel]").click()
    expect(task_row(page, task_id)).to_have_attribute("data-state", "REVOKED")
    assert not page.errors


@both_widths
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
    action(page, task_id, "cancel").click()
    assert not page.errors


@pytest.fixture(scope="module")
def dev_gateway(redis_url, log_dir) -> Iterator[Any]:
    """Development mode (no API_KEYS) on a database no worker consumes."""
    from tests.support.processes import start_gateway

    gateway = start_gateway(database_url(redis_url, 8), log_dir, env={"API_KEYS": ""})
    yield gateway
    gateway.stop()


@both_widths
def test_development_mode_and_a_missing_worker_are_explained(browser, dev_gateway, width) -> None:
    page = new_page(browser, dev_gateway.base_url, width)
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
        page.keyboard.press("Escape")
        page.get_by_test_id("chat-input").fill("anyone there?")
        page.get_by_test_id("chat-send").click()
        expect(page.get_by_test_id("chat-message").last).to_contain_text("no worker")
        health = page.request.get("/healthz").json()
        assert health["status"] == "degraded" and "no live workers" in health["reasons"]
        assert not page.errors
    finally:
        page.context.close()


@both_widths
def test_a_pending_task_says_how_many_tasks_are_ahead_of_it(
    browser, dev_gateway, redis_url, width
) -> None:
    """Its place among the queue's messages: higher priorities first, then older ones of
    its own priority; and its name's rate limit with the slots taken."""
    import redis

    from workers.runtime.queue_depth import priority_keys

    client = redis.Redis.from_url(database_url(redis_url, 8))
    client.delete(*priority_keys("ai_high_priority"))  # what earlier tests left queued here
    page = new_page(browser, dev_gateway.base_url, width)
    try:
        page.goto("/")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")

        def submit(priority: int) -> str:
            body = {"conversation_id": "ui-ahead", "user_message": "wait", "priority": priority}
            reply = page.request.post("/api/v1/tasks/ai/generate", data=body)
            assert reply.status == 202
            return reply.json()["task_id"]

        normal, urgent, later = submit(5), submit(9), submit(5)
        states = {
            t: page.request.get(f"/api/v1/tasks/status/{t}?explain=true").json()["queue_state"]
            for t in (normal, urgent, later)
        }
        assert [states[t]["ahead"] for t in (urgent, normal, later)] == [0, 1, 2]
        assert all(
            s["waiting"] == 3 and s["consumers"] == 0 and not s["held"] for s in states.values()
        )
        rate = states[later]["rate_limit"]
        assert re.fullmatch(r"\d+/60s", rate) and states[later]["rate_limit_used"] == 0
        page.goto(f"/tasks/{later}")
        why = page.get_by_test_id("detail-queue-state")
        expect(why).to_contain_text("No worker consumes ai_high_priority")
        expect(why).to_contain_text("with 2 tasks ahead of it")
        expect(why.get_by_test_id("detail-rate")).to_have_text(
            f"0 of {rate.split('/')[0]} used in the last 60s"
        )
        assert not page.errors
    finally:
        page.context.close()
        client.close()


@pytest.fixture(scope="module")
def offline_stack(redis_url, log_dir) -> Iterator[tuple[str, Any]]:
    """A first run: no OPENAI_API_KEY, so the offline provider answers; one worker with a
    single process, consuming the AI queue and `default` (not knowledge_default)."""
    from tests.support.processes import start_gateway, start_worker

    url = database_url(redis_url, OFFLINE_DB)
    no_model = {"OPENAI_API_KEY": ""}
    worker = start_worker(
        url, log_dir, name="offline", concurrency=1, queues="ai_high_priority,default",
        env=no_model,
    )  # fmt: skip
    gateway = start_gateway(url, log_dir, env={"API_KEYS": API_KEYS, **no_model})
    yield url, gateway
    gateway.stop()
    worker.stop()


@both_widths
def test_a_queued_chat_reply_streams_from_the_offline_provider(
    browser, offline_stack, width
) -> None:
    """While its worker is busy the reply is "queued…", not blamed on a missing worker
    though another queue has none (the banner); then the offline provider's answer streams
    in, growing chunk by chunk, and is labelled as offline."""
    import redis

    url, gateway = offline_stack
    client = redis.Redis.from_url(url, decode_responses=True)
    started, release = f"tests:ui:{uuid.uuid4().hex}", f"tests:ui:{uuid.uuid4().hex}"
    page = new_page(browser, gateway.base_url, width)
    try:
        send_task(url, "tests.block", started, release, queue="ai_high_priority")
        wait_until(lambda: client.llen(started), timeout=20, what="the worker busy")
        send_task(url, "tests.record", "tests:ui:nobody", "x", queue="knowledge_default")
        log_in(page, ALICE)
        expect(page.get_by_test_id("queue-banner")).to_contain_text(
            "No worker consumes knowledge_default"
        )
        # Each length the reply's text takes on screen.
        page.evaluate("""() => {
          window.__lengths = [];
          new MutationObserver(() => {
            const replies = document.querySelectorAll("[data-testid=chat-reply]");
            const length = replies.length ? replies[replies.length - 1].textContent.length : 0;
            if (length && length !== window.__lengths.at(-1)) window.__lengths.push(length);
          }).observe(document.querySelector("#chat-log"),
            { subtree: true, childList: true, characterData: true });
        }""")
        page.get_by_test_id("chat-input").fill("hello, offline")
        page.get_by_test_id("chat-send").click()
        message = page.get_by_test_id("chat-message").last
        status = message.locator(".bubble-status")
        expect(message).to_have_attribute("data-state", "PENDING")
        expect(status).to_have_text("queued…")
        with page.expect_response("**/api/v1/tasks/stats"):  # read with the reply queued
            page.evaluate("window.claw.refreshStats()")
        expect(status).to_have_text("queued…")
        client.set(release, "1", ex=60)
        expect(message).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
        expect(status).to_contain_text("offline provider (no OPENAI_API_KEY)")
        expect(message.get_by_test_id("chat-reply")).to_contain_text("No language model")
        lengths = page.evaluate("window.__lengths")
        assert len(lengths) >= 5 and lengths == sorted(lengths), lengths
        assert int(message.get_attribute("data-chunks") or 0) >= 5
        assert not page.errors
    finally:
        client.set(release, "1", ex=60)
        client.close()
        page.context.close()


def vectorize(page: Page, kb_id: str, document_id: str, text: str) -> None:
    body = {"kb_id": kb_id, "document_id": document_id, "text": text, "title": document_id}
    reply = page.request.post("/api/v1/tasks/knowledge/vectorize", data=body, headers=AUTH)
    assert reply.status == 202
    task_id = reply.json()["task_id"]
    wait_until(lambda: status_of(page, task_id)["status"] == "SUCCESS", timeout=20,
               what=f"{document_id} vectorized")  # fmt: skip


@both_widths
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


@both_widths
def test_housekeeping_tasks_are_hidden_and_move_no_counter(page: Page, ui_redis_url: str) -> None:
    log_in(page, ADMIN)
    expect(page.get_by_test_id("tasks")).to_be_visible()
    expect(page.get_by_test_id("count-success")).to_have_text(re.compile(r"^\d+$"))
    # The counters as shown before and after each task event of the page's feed.
    page.evaluate("""() => {
      const claw = window.claw, counters = document.querySelector("#counters");
      const count = claw.countTransition.bind(claw);
      window.__moves = [];
      claw.countTransition = (msg) => {
        const before = counters.innerText;
        count(msg);
        window.__moves.push({ id: msg.task_id, state: msg.state,
          moved: counters.innerText !== before });
      };
    }""")
    task_id = send_task(ui_redis_url, "check_task_health")
    page.wait_for_function(
        "id => window.__moves.some((m) => m.id === id && m.state === 'SUCCESS')", arg=task_id
    )
    moves = [m for m in page.evaluate("window.__moves") if m["id"] == task_id]
    assert len(moves) >= 2 and not any(m["moved"] for m in moves), moves
    listed = page.request.get("/api/v1/tasks/list", headers=ADMIN_AUTH).json()["tasks"]
    assert task_id not in {t["task_id"] for t in listed}
    expect(task_row(page, task_id)).to_have_count(0)
    page.get_by_test_id("filter-system").check()
    expect(task_row(page, task_id)).to_be_visible()
    expect(page).to_have_url(re.compile(r"system=true"))
    assert not page.errors


def test_the_dashboard_fits_a_phone(browser, ui_gateway) -> None:
    """390 px wide: no sideways scrolling, every field and action of a task on screen, the
    user's name, the chart's axes, and the chat within reach; screenshots saved."""
    page = new_page(browser, ui_gateway.base_url, WIDTHS["phone"])
    try:
        log_in(page, ADMIN)  # (an admin's dashboard has the throughput chart)
        task_id = submit_from_form(page, "seen on a phone", delay=300)
        row = task_row(page, task_id)
        expect(row).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        cancel = row.locator("[data-action=cancel]")
        expect(cancel).to_be_visible()  # the row is drawn again as the feed updates it
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
        # From the top: the sticky header is drawn where the page is scrolled to.
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=SCREENSHOTS / "dashboard-phone.png", full_page=True)
        cancel.click()
        expect(row).to_have_attribute("data-state", "REVOKED")
        assert not page.errors
    finally:
        page.context.close()


@both_widths
def test_with_many_tasks_the_chat_and_knowledge_stay_within_reach(page: Page, width: int) -> None:
    """25 and more rows do not push the chat and the knowledge panel out of reach: near the
    top of the page, and a tap away on the links to the panels where they sit below."""
    notify = {"channel": "in_app", "recipient": "alice", "subject": "row", "message": "filler"}
    sent = [
        page.request.post("/api/v1/tasks/notifications/send", data=notify, headers=AUTH)
        for _ in range(26)
    ]
    assert all(reply.status == 202 for reply in sent)
    log_in(page, ALICE)
    rows = page.locator("[data-testid=tasks] tbody tr")
    expect(rows.nth(25)).to_be_attached()
    height = page.viewport_size["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for panel in ("chat", "knowledge"):
        box = page.get_by_test_id(panel).bounding_box()
        assert box is not None and box["y"] < height * 2.5, (panel, box)
    if width < 1280:  # the panels sit under the list: links to them on top
        for panel in ("chat", "knowledge"):
            page.evaluate("window.scrollTo(0, 0)")
            page.get_by_test_id(f"jump-{panel}").click()
            box = page.get_by_test_id(panel).bounding_box()
            assert box is not None and 0 <= box["y"] < height / 2, (panel, box)
    else:  # beside the list, on the first screen
        expect(page.get_by_test_id("jump")).to_be_hidden()
        assert page.get_by_test_id("chat").bounding_box()["y"] < height  # type: ignore[index]
    assert not page.errors


@both_widths
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


@both_widths
def test_a_worker_shut_down_from_the_dashboard_is_shown_leaving_at_once(
    page: Page, ui_redis_url: str, log_dir
) -> None:
    """It leaves as it announces it (Celery's worker-offline, as its warm shutdown begins),
    though it stays registered while it finishes its running task: neither a reload of
    the list nor GET /workers shows it online meanwhile."""
    import redis

    from tests.support.processes import start_worker

    leaving = start_worker(ui_redis_url, log_dir, name="leaving", queues="tests_leaving")
    client = redis.Redis.from_url(ui_redis_url, decode_responses=True)
    started, release = f"tests:ui:{uuid.uuid4().hex}", f"tests:ui:{uuid.uuid4().hex}"
    try:
        send_task(ui_redis_url, "tests.block", started, release, queue="tests_leaving")
        wait_until(lambda: client.llen(started), timeout=20, what="the task running")
        log_in(page, ADMIN)
        card = page.locator(f'li.worker[data-hostname="{leaving.hostname}"]')
        seen = card.get_by_test_id("worker-seen")
        expect(seen).to_have_text(re.compile(r"just now|\d+s ago"))
        page.on("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Shut down").click()
        # At once: no controls, and offline as soon as it says so, though it still runs
        # its task (and is registered, with a fresh heartbeat) until released.
        expect(card.get_by_role("button", name="Shut down")).to_have_count(0)
        expect(seen).to_have_text("offline")
        assert leaving.alive() and client.hexists(registry.WORKERS_HASH, leaving.hostname)
        listed = page.request.get("/api/v1/tasks/workers", headers=ADMIN_AUTH).json()["workers"]
        assert {w["hostname"]: w["status"] for w in listed}[leaving.hostname] == "offline"
        page.evaluate("window.claw.workers.load()")  # a reload of the list (awaited)
        expect(seen).to_have_text("offline")
        client.set(release, "1", ex=60)
        # What the shutdown did, once its task finished and it exited.
        expect(page.locator(".toast").filter(has_text=leaving.hostname)).to_contain_text("stopped")
        wait_until(lambda: not leaving.alive(), timeout=20, what="the worker exiting")
        page.evaluate("window.claw.workers.load()")  # gone from the registry: still offline
        expect(seen).to_have_text("offline")
        assert not page.errors
    finally:
        client.set(release, "1", ex=60)
        client.close()
        leaving.stop()


def test_a_worker_make_run_keeps_running_is_said_to_start_again(
    page: Page, ui_redis_url: str, log_dir
) -> None:
    """Under `make run` the worker runs under workers/dev/keep_running.py: a shutdown says
    it starts again, shows it leaving, then back."""
    from tests.support.processes import Worker, wait_ready

    hostname = f"kept-{uuid.uuid4().hex[:6]}@localhost"
    argv = [
        sys.executable, "-m", "workers.dev.keep_running",
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E",
        "-Q", "tests_kept", "-c", "1", "-n", hostname, "--loglevel=INFO",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    kept = Worker(argv, base_env(ui_redis_url), log_dir / f"worker-{hostname[:11]}.log")
    kept.hostname = hostname
    try:
        wait_ready(ui_redis_url, [kept])
        log_in(page, ADMIN)
        card = page.locator(f'li.worker[data-hostname="{hostname}"]')
        seen = card.get_by_test_id("worker-seen")
        expect(seen).to_have_text(re.compile(r"just now|\d+s ago"))
        page.on("dialog", lambda dialog: dialog.accept())
        with page.expect_response("**/workers/shutdown") as answer:
            card.get_by_role("button", name="Shut down").click()
        assert answer.value.json()["replies"][hostname]["restarted_by"] == "make run"
        expect(page.locator(".toast").filter(has_text=hostname)).to_contain_text(
            "make run starts it again"
        )
        expect(seen).to_have_text("offline")
        # Started again under the same name: back online, with its controls.
        expect(seen).to_have_text(re.compile(r"just now|\d+s ago"), timeout=30_000)
        expect(card.get_by_role("button", name="Shut down")).to_be_visible()
        assert kept.alive()
        assert not page.errors
    finally:
        kept.stop()


@both_widths
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
