"""Logging for every process: one handler on the root logger, secrets redacted.

JSON lines in production (one object per line: time, level, logger, message, and the task
fields), readable lines in development. A line logged while a Celery task runs carries
that task's id, name and queue, whichever logger wrote it. Secrets never reach the
output: the values of the secret settings are replaced wherever they appear, and so are
passwords in URLs, bearer tokens and OpenAI-style keys, in messages and tracebacks alike.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from workers.core.settings import Settings

REDACTED = "***"
TASK_FIELDS = ("task_id", "task_name", "queue")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(task_context)s: %(message)s"

# Secrets with a recognisable shape, even when they are not in the settings.
_PATTERNS = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.I), r"\g<keep>***@"),
    (re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\g<keep>***"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
    (
        re.compile(r"(?P<keep>\b(?:password|passwd|api_key|apikey|secret|token)\s*[=:]\s*)"
                   r"(?!\*\*\*)[^\s,;&'\"]+", re.I),
        r"\g<keep>***",
    ),
)  # fmt: skip
# Shorter values are too likely to occur by chance to be replaced everywhere.
MIN_SECRET_LENGTH = 4


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, longest first (so no secret is half-replaced).

    Every `SecretStr` setting counts, so a secret added later is redacted without a change
    here; API_KEYS also counts token by token, and REDIS_URL for its password.
    """
    values: set[str] = set()
    for _, value in settings:
        if isinstance(value, SecretStr):
            values.add(value.get_secret_value())
    for entry in settings.api_keys.get_secret_value().split(","):
        values.add(entry.strip().split(":", 1)[0])
    for part in settings.redis_url.split(";"):
        password = urlsplit(part.strip()).password
        if password:
            values.add(password)
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


class Redactor:
    """Replaces known secret values and secret-shaped substrings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class TaskContextFilter(logging.Filter):
    """Adds the running Celery task's id, name and queue to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = _current_task()
        request = getattr(task, "request", None) if task is not None else None
        task_id = getattr(request, "id", None) if request is not None else None
        if task_id:
            delivery = getattr(request, "delivery_info", None) or {}
            record.task_id = task_id
            record.task_name = task.name
            record.queue = delivery.get("routing_key") or getattr(task, "queue", None)
        for field in TASK_FIELDS:
            if not hasattr(record, field):
                setattr(record, field, None)
        record.task_context = (
            f" [{record.task_name}({record.task_id}) queue={record.queue}]"  # type: ignore[attr-defined]
            if record.task_id  # type: ignore[attr-defined]
            else ""
        )
        return True


def _current_task() -> Any:
    celery_state = sys.modules.get("celery._state")
    if celery_state is None:  # the gateway never runs tasks: no need to import Celery
        return None
    return celery_state.get_current_task()


class TextFormatter(logging.Formatter):
    """Readable lines for development, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line for production log pipelines, redacted."""

    def __init__(self, redactor: Redactor, process_type: str) -> None:
        super().__init__()
        self.redactor = redactor
        self.process_type = process_type

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process_type,
            "pid": record.process,
            "message": self.redactor(record.getMessage()),
        }
        for field in TASK_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.redactor(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self.redactor(record.exc_text)
        return json.dumps(entry, default=str)


def uses_json(settings: Settings) -> bool:
    if settings.log_format == "auto":
        return settings.is_production
    return settings.log_format == "json"


def configure_logging(
    settings: Settings, process_type: str = "app", stream: IO[str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one redacting handler; return it."""
    redactor = Redactor(secret_values(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(
        JsonFormatter(redactor, process_type) if uses_json(settings) else TextFormatter(redactor)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Libraries that install their own handlers would bypass the redaction.
    for name in ("celery", "celery.task", "celery.redirected", "tornado", "aiohttp"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
    return handler
