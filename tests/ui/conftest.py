"""The browser harness: Debian's Chromium driven by Playwright, a secured gateway, a worker
whose AI provider is the fake OpenAI server (so replies stream in several chunks)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import API_KEYS
from tests.support.fake_openai import FakeOpenAI

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: no first-run UI, no calls home, no QUIC (the gateway speaks TCP).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"


def ensure_chromium() -> Path:
    """Chromium, installed the way `make browser` does when missing and running as root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip("the browser test needs /usr/bin/chromium (apt-get install chromium, as root)")
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail("/usr/bin/chromium is missing and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        [apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = ensure_chromium()
    # Never fetch Playwright's own browser builds: the system Chromium is the one under test.
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    # "[slow]" replies stream 40 extra words 50 ms apart: long enough to watch (Playwright
    # polls at most a second apart), short enough to wait for.
    with FakeOpenAI.running(slow_words=40, slow_delay=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def ui_redis_url(redis_url: str) -> str:
    """A database of its own: the suite's shared worker (no fake OpenAI) never takes our tasks."""
    return redis_url.rsplit("/", 1)[0] + "/7"


@pytest.fixture(scope="module")
def ui_worker(ui_redis_url, log_dir, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_worker

    # Small embedding batches: a short document still reports progress several times.
    env = fake_openai.env(EMBEDDING_BATCH_SIZE="2", CHUNK_SIZE="200", CHUNK_OVERLAP="0")
    worker = start_worker(ui_redis_url, log_dir, name="ui", concurrency=2, env=env)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def ui_gateway(ui_redis_url, log_dir, ui_worker, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    # The gateway embeds search queries with the same (fake) provider as the worker.
    # A relevance floor for the fake provider's 64-dimension embeddings (hash collisions
    # give unrelated text ~0.2): a nonsense search finds nothing.
    env = fake_openai.env(API_KEYS=API_KEYS, KNOWLEDGE_MIN_SCORE="0.3")
    gateway = start_gateway(ui_redis_url, log_dir, env=env)
    yield gateway
    gateway.stop()


# Issue 15's points are each checked at both widths; a phone as Chromium emulates one.
WIDTHS = {"desktop": 1440, "phone": 390}
both_widths = pytest.mark.parametrize("width", list(WIDTHS.values()), ids=list(WIDTHS))


def new_page(browser: Any, base_url: str, width: int = WIDTHS["desktop"]) -> Any:
    """A tab in a fresh context (no cookies), `width` px wide; uncaught script errors are
    collected in its `errors`. Close it with `page.context.close()`."""
    if width < 600:
        options: dict[str, Any] = {
            "viewport": {"width": width, "height": 844}, "device_scale_factor": 2,
            "is_mobile": True, "has_touch": True,
        }  # fmt: skip
    else:
        options = {"viewport": {"width": width, "height": 1000}}
    context = browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    return tab


@pytest.fixture
def width() -> int:
    """The page's width: desktop, unless a test is parametrized (`both_widths`)."""
    return WIDTHS["desktop"]


@pytest.fixture
def page(browser, ui_gateway, width) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the gateway; uncaught script errors are collected."""
    tab = new_page(browser, ui_gateway.base_url, width)
    yield tab
    tab.context.close()
