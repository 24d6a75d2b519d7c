"""Log lines: JSON in production, text in development, task context, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from workers.core.logging_setup import Redactor, configure_logging, secret_values
from workers.core.settings import load_settings


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_secret_values_cover_every_secret_setting_and_the_redis_password() -> None:
    settings = load_settings(
        api_keys=SecretStr("tok-alpha-123:alice:user,tok-beta-456:bob:admin"),
        flower_password=SecretStr("flower-pw-789"),
        openai_api_key=SecretStr("sk-canary-000111"),
        redis_url="redis://:redis-pw-222@redis:6379/0",
    )
    found = set(secret_values(settings))
    assert {"tok-alpha-123", "tok-beta-456", "flower-pw-789", "sk-canary-000111",
            "redis-pw-222"} <= found  # fmt: skip


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connecting to redis://:hunter22@10.0.0.5:6379/0", "hunter22"),
        ("connecting to sentinel://user:pa55word@s1:26379;sentinel://s2:26379", "pa55word"),
        ("Authorization: Bearer abcDEF123456", "abcDEF123456"),
        ("openai said: invalid key sk-proj-abcdefgh12345", "sk-proj-abcdefgh12345"),
        ("login failed password=letmein99 for admin", "letmein99"),
    ],
)
def test_secret_shaped_text_is_redacted_without_knowing_the_secret(text: str, secret: str) -> None:
    redacted = Redactor()(text)
    assert secret not in redacted and "***" in redacted


def test_harmless_urls_and_words_are_left_alone() -> None:
    text = "gateway on http://127.0.0.1:8000/healthz, tokens: {'total': 3}"
    assert Redactor()(text) == text


def test_production_lines_are_json_with_secrets_redacted_even_in_tracebacks(
    restore_root_logger: None,
) -> None:
    settings = load_settings(app_env="production", flower_password=SecretStr("canary-flower"))
    stream = io.StringIO()
    configure_logging(settings, "web", stream=stream)
    log = logging.getLogger("tests.deploy")
    log.info("flower password is %s", "canary-flower")
    try:
        raise RuntimeError("boom canary-flower")
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["level"] for e in lines] == ["INFO", "ERROR"]
    assert lines[0]["message"] == "flower password is ***"
    assert lines[0]["logger"] == "tests.deploy" and lines[0]["process"] == "web"
    assert "RuntimeError: boom ***" in lines[1]["exception"]
    assert "canary-flower" not in stream.getvalue()


def test_development_lines_are_readable_text(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(load_settings(app_env="development"), "web", stream=stream)
    logging.getLogger("tests.deploy").warning("hello %s", "world")
    line = stream.getvalue().strip()
    assert line.endswith("WARNING tests.deploy: hello world")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
