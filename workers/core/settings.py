"""The one settings object of every process, read from the environment and `.env`.

Both the gateway and the workers read it; only this module reads the environment.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.core.queues import QUEUES

REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(Exception):
    """A setting has a bad value; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    app_env: Literal["development", "production"] = "development"
    redis_url: str = DEFAULT_REDIS_URL
    # Sentinel: the name of the monitored primary (REDIS_URL=sentinel://host:26379;...).
    redis_sentinel_master: str = "mymaster"
    # Replica acknowledgement: a submission is accepted (202) only once this many replicas
    # hold it (Redis WAIT after the publish, on the same connection); 0: not asked.
    redis_replica_acks: int = Field(0, ge=0)
    redis_replica_ack_timeout_ms: int = Field(500, ge=1)
    # How long a worker waits for the replicas to hold a task's final state before it
    # acknowledges the message (longer: a replica re-syncing after a failover catches up).
    redis_replica_ack_final_timeout_ms: int = Field(10_000, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Gateway processes sharing PORT (the Heroku convention). Above 1, gunicorn's master
    # forks that many and replaces any that dies; each has its own event loop and core.
    web_concurrency: int = Field(1, ge=1)
    log_level: str = "INFO"
    # Log lines: JSON in production and readable text in development unless set.
    log_format: Literal["auto", "json", "text"] = "auto"
    # Where `make run` keeps its private Redis data and logs (git-ignored).
    var_dir: str = "var"

    # API keys: "token:owner:role,..." (role user or admin). Empty means development mode.
    api_keys: SecretStr = SecretStr("")
    # Extra origins (comma-separated, e.g. https://app.example.com) allowed to open the
    # websocket and to use the session cookie; the gateway's own origin always is.
    allowed_origins: str = ""
    session_ttl: int = Field(12 * 3600, ge=60)
    ws_heartbeat: float = Field(20.0, gt=0)
    ws_buffer: int = Field(1000, ge=10)
    ws_stats_interval: float = Field(5.0, gt=0)
    # What one websocket may subscribe to: task ids, and task names and queues (each).
    ws_max_task_ids: int = Field(1000, ge=1)
    ws_max_names: int = Field(100, ge=1)
    # A task's SSE stream (`GET /tasks/{id}/stream`): a comment every `sse_heartbeat`
    # seconds keeps proxies from closing it; a reader `sse_buffer` events behind, or whose
    # socket takes no data for `sse_write_timeout` seconds, is told to resume and dropped.
    sse_heartbeat: float = Field(15.0, gt=0)
    sse_buffer: int = Field(1000, ge=10)
    sse_write_timeout: float = Field(10.0, gt=0)
    # A stream older than this ends with `resume` (the reader reconnects where it was), so
    # long-lived streams move to new gateway replicas after a deploy or a scale-up.
    sse_max_age: float = Field(600.0, gt=0)
    # A bearer token for Prometheus scrapers: it reads /metrics and nothing else. Without
    # it, /metrics needs an admin API key.
    metrics_token: SecretStr | None = None

    flower_user: str = "admin"
    flower_password: SecretStr = SecretStr("admin")
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout: float = Field(60.0, gt=0)
    # Without OPENAI_API_KEY the offline provider answers (from a knowledge base), streamed
    # word by word this many seconds apart, as a model would.
    offline_token_delay: float = Field(0.03, ge=0)
    # The models a request may name (comma-separated). Empty: OPENAI_MODEL and every model
    # priced in MODEL_PRICES. The gateway answers 400 to others; workers fail such tasks.
    openai_allowed_models: str = ""
    # The largest max_tokens a request may ask for, by the role of its API key. Workers
    # clamp tasks from Python publishers (no role) to the larger of the two.
    max_tokens_user: int = Field(4096, ge=1)
    max_tokens_admin: int = Field(16384, ge=1)

    result_expires: int = Field(3600, ge=1)
    # How long the task index keeps a task's record (history), in seconds.
    task_history_ttl: int = Field(7 * 24 * 3600, ge=60)
    task_soft_time_limit: float = Field(300, gt=0)
    task_time_limit: float = Field(600, gt=0)
    worker_concurrency: int = Field(4, ge=1)
    # The queues a worker consumes when its command line has no -Q (comma-separated), so
    # AI and knowledge workers can be split by environment alone.
    worker_queues: str = ",".join(QUEUES)
    worker_max_tasks_per_child: int = Field(100, ge=1)
    worker_prefetch_multiplier: int = Field(1, ge=1)
    # Seconds an unacknowledged message may stay with a worker before Redis redelivers
    # it. Must stay well above the hard time limit or long tasks run twice.
    broker_visibility_timeout: int = Field(3600, ge=1)
    # A PENDING task whose message is in no queue for this long is republished.
    task_recovery_grace: float = Field(120, gt=0)
    # How often the workers look for lost messages (one of them per interval; no task).
    task_recovery_interval: float = Field(60, gt=0)

    retry_backoff_base: float = Field(60, gt=0)
    retry_backoff_max: float = Field(3600, gt=0)
    retry_jitter: float = Field(0.1, ge=0, le=1)

    # --- Built-in tasks (issue 5) ---
    # Platform-wide limits, enforced through Redis across every worker: "N/s|m|h" or
    # "N/<seconds>s" (e.g. "3/2s").
    ai_rate_limit: str = "10/m"
    vectorize_rate_limit: str = "5/m"
    openai_embedding_model: str = "text-embedding-3-small"
    # USD per 1M tokens, per model: {"model": {"prompt": 0.15, "completion": 0.6}}.
    model_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": {"prompt": 0.15, "completion": 0.60},
            "gpt-4o": {"prompt": 2.50, "completion": 10.00},
            "gpt-4.1-mini": {"prompt": 0.40, "completion": 1.60},
            "gpt-4.1": {"prompt": 2.00, "completion": 8.00},
        }
    )
    # AI usage counters (`GET /api/v1/usage`): how long hour and day buckets are kept.
    usage_hour_ttl: int = Field(14 * 24 * 3600, ge=3600)
    usage_day_ttl: int = Field(90 * 24 * 3600, ge=24 * 3600)
    # Every owner's AI budget unless the admin API sets one (0: unlimited): tokens of AI
    # tasks finished in the last 60 s, and USD of the current UTC day. Over it, AI
    # submissions answer 429; a task already running finishes.
    budget_tokens_per_minute: int = Field(0, ge=0)
    budget_cost_per_day: float = Field(0.0, ge=0)
    # What a conversation sends as context: at most this many prior turns and tokens.
    conversation_max_turns: int = Field(20, ge=0)
    conversation_max_tokens: int = Field(3000, ge=0)
    conversation_ttl: int = Field(30 * 24 * 3600, ge=60)
    # Knowledge base: chunks in characters, embedding batch size, passages used to ground.
    chunk_size: int = Field(800, ge=50)
    chunk_overlap: int = Field(100, ge=0)
    embedding_batch_size: int = Field(32, ge=1)
    offline_embedding_dims: int = Field(256, ge=16)
    grounding_top_k: int = Field(4, ge=1, le=50)
    # Search results (and grounding passages) no more similar than this (cosine) are not
    # returned: a nonsense query finds nothing, not a weak "match". Unset: the embedder's
    # own floor (workers/knowledge/embeddings.py): 0.25 with OpenAI's text-embedding-3-*
    # (unrelated text scores about 0.0-0.2); 0 with the offline embedder, which matches
    # only passages sharing a word with the query (its hashed scores cannot tell).
    knowledge_min_score: float | None = Field(None, ge=-1, le=1)

    # Webhooks: HMAC-SHA256 key for the signature header. Private, loopback and
    # link-local targets are refused unless allowed (all, or a comma-separated CIDR list).
    webhook_secret: SecretStr | None = None
    webhook_timeout: float = Field(10.0, gt=0)
    allow_private_webhook_targets: bool = False
    webhook_allowed_networks: str = ""
    # Task webhooks (a submission's `webhook`): a failed or non-2xx delivery is retried
    # with exponential backoff (base, capped at max) for this long after its first attempt.
    task_webhook_retry_for: float = Field(24 * 3600, gt=0)
    task_webhook_backoff_base: float = Field(5.0, gt=0)
    task_webhook_backoff_max: float = Field(600.0, gt=0)
    # Email.
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str = "claw@localhost"
    smtp_timeout: float = Field(10.0, gt=0)
    # In-app inbox: notifications kept per user.
    inbox_max: int = Field(100, ge=1)

    # Health check: alert through send_notification when both are set.
    ops_alert_channel: str | None = None
    ops_alert_recipient: str | None = None
    health_failure_rate_threshold: float = Field(0.25, ge=0, le=1)
    # Below this many finished tasks in the window, no failure-rate verdict.
    health_min_finished: int = Field(10, ge=1)
    # A worker whose last heartbeat is older than this is reported as stale.
    health_heartbeat_timeout: float = Field(30.0, gt=0)
    # Queues watched besides the four built-in ones (comma-separated).
    health_extra_queues: str = ""
    # A worker silent this long is forgotten by cleanup_expired_results.
    dead_worker_after: float = Field(24 * 3600, gt=0)

    # Owners' schedules (`/api/v1/schedules`): at most this many per owner, none firing
    # more often than once in this many seconds.
    schedules_per_owner: int = Field(20, ge=0)
    schedule_min_interval: float = Field(60.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        for url in value.split(";"):
            parts = urlsplit(url.strip())
            if parts.scheme not in REDIS_SCHEMES:
                raise ValueError(
                    f"must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)}"
                )
            if parts.scheme != "unix" and not parts.hostname:
                raise ValueError("has no host")
            try:
                parts.port  # noqa: B018 - raises on a non-numeric port
            except ValueError as exc:
                raise ValueError(f"has a bad port ({exc})") from None
            db = parts.path.lstrip("/")
            if db and not (db.isascii() and db.isdigit()):
                raise ValueError("database must be a number (redis://host:6379/0)")
        return value

    @field_validator("worker_queues")
    @classmethod
    def _check_worker_queues(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(QUEUES))
        if not names or unknown:
            raise ValueError(f"must name queues among {', '.join(QUEUES)} (unknown: {unknown})")
        return ",".join(names)

    @field_validator("knowledge_min_score", mode="before")
    @classmethod
    def _unset_knowledge_min_score(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # KEY=

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def allowed_models(self) -> frozenset[str]:
        names = {m.strip() for m in self.openai_allowed_models.split(",") if m.strip()}
        return frozenset(names or {self.openai_model, *self.model_prices})

    def max_tokens_for(self, role: str | None) -> int:
        """The max_tokens cap of an API key's role; None (no role): the larger cap."""
        if role == "user":
            return self.max_tokens_user
        if role == "admin":
            return self.max_tokens_admin
        return max(self.max_tokens_user, self.max_tokens_admin)

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The Redis URL may carry a password; SecretStr fields redact themselves.
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "redis_url" else value)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and errors."""
    out = []
    for part in url.split(";"):
        parts = urlsplit(part)
        if parts.password is None:
            out.append(part)
            continue
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        out.append(urlunsplit(parts._replace(netloc=netloc)))
    return ";".join(out)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise SettingsError(f"invalid setting {name}: {error['msg']}") from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
