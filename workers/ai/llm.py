"""The chat model: OpenAI (or any compatible server) through the official SDK, streaming.

Provider faults are sorted once, here: rate limits, 5xx, timeouts and connection errors
become `TransientError` (with the server's Retry-After), refusals (400/401/403/404/422)
become `PermanentError` with a message that says what to fix.

What a request may ask of the provider is limited here too, for every publisher: the
gateway refuses other models and larger `max_tokens` per role (400), and a task from a
Python publisher that bypasses it fails on a model outside the allow-list and has its
`max_tokens` clamped to the largest cap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded

from workers.core.settings import Settings
from workers.runtime.base import PermanentError, TransientError

if TYPE_CHECKING:  # the SDK is imported when first used: ~0.5 s off every worker start
    import openai

logger = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class ChatLimits:
    """The models a chat request may name and the most output it may ask for."""

    models: frozenset[str]
    max_tokens: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatLimits:
        return cls(settings.allowed_models, settings.max_tokens_for(None))

    def apply(self, model: str, max_tokens: int | None) -> int | None:
        """The `max_tokens` to send (clamped); PermanentError for a model not allowed."""
        if model not in self.models:
            raise PermanentError(
                f"model {model!r} is not allowed here; one of {', '.join(sorted(self.models))} "
                "(OPENAI_ALLOWED_MODELS)"
            )
        if max_tokens is not None and max_tokens > self.max_tokens:
            logger.info("max_tokens %d clamped to %d", max_tokens, self.max_tokens)
            return self.max_tokens
        return max_tokens


# The attribute of a client `openai_client` made that carries the settings' `ChatLimits`,
# which `stream_chat` applies to every request, whoever published the task.
LIMITS_ATTRIBUTE = "claw_chat_limits"


def openai_client(settings: Settings) -> openai.OpenAI:
    """An SDK client from the settings. The SDK does not retry: Celery does, with backoff."""
    import openai

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    client = openai.OpenAI(
        api_key=key,
        base_url=settings.openai_base_url or None,
        timeout=settings.openai_timeout,
        max_retries=0,
    )
    setattr(client, LIMITS_ATTRIBUTE, ChatLimits.from_settings(settings))
    return client


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds only), if given."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue  # an HTTP date: fall back to our backoff
    return None


@contextlib.contextmanager
def provider_errors() -> Iterator[None]:
    """Translate SDK exceptions into the platform's transient/permanent errors."""
    import openai

    try:
        yield
    except openai.APITimeoutError as exc:
        raise TransientError(f"model provider timed out: {exc}") from exc
    except openai.APIConnectionError as exc:
        raise TransientError(f"model provider unreachable: {exc}") from exc
    except openai.APIStatusError as exc:
        status = exc.status_code
        detail = _error_detail(exc)
        if status >= 500 or status in TRANSIENT_STATUS:
            raise TransientError(
                f"model provider answered {status}: {detail}",
                retry_after=retry_after(exc.response.headers),
            ) from exc
        hint = {
            401: "check OPENAI_API_KEY",
            403: "the API key may not use this model or endpoint",
            404: "check OPENAI_MODEL and OPENAI_BASE_URL",
        }.get(status, "the request was refused")
        raise PermanentError(
            f"model provider refused the request ({status}): {detail}; {hint}"
        ) from exc


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message


@dataclass
class ChatResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    usage_estimated: bool = False


def estimate_tokens(text: str) -> int:
    """About 4 characters per token: used for budgets and when the server sends no usage."""
    return max(1, len(text) // 4) if text else 0


def stream_chat(
    client: openai.OpenAI,
    *,
    model: str,
    messages: list[dict[str, str]],
    temperature: float,
    max_tokens: int | None,
    on_delta: Callable[[str], None],
) -> ChatResult:
    """Stream a chat completion, calling `on_delta` per piece of text.

    On the soft time limit the stream is closed and what arrived so far is returned
    (`finish_reason="time_limit"`), with estimated token counts.
    """
    parts: list[str] = []
    usage = None
    finish = "stop"
    answered_model = model
    stream = None
    limits = getattr(client, LIMITS_ATTRIBUTE, None)
    if isinstance(limits, ChatLimits):
        max_tokens = limits.apply(model, max_tokens)
    options: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    try:
        with provider_errors():
            # Plain dicts are valid message params; the SDK's overloads want TypedDicts.
            stream = client.chat.completions.create(  # type: ignore[call-overload]
                model=model,
                messages=messages,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
            for chunk in stream:
                answered_model = chunk.model or answered_model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        parts.append(choice.delta.content)
                        on_delta(choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
    except SoftTimeLimitExceeded:
        logger.warning("soft time limit reached while streaming; returning the partial reply")
        finish = "time_limit"
        usage = None
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
    text = "".join(parts)
    if usage is not None:
        return ChatResult(
            text, answered_model, usage.prompt_tokens, usage.completion_tokens, finish
        )
    prompt = sum(estimate_tokens(m["content"]) + 4 for m in messages)
    return ChatResult(text, answered_model, prompt, estimate_tokens(text), finish, True)


def price_for(prices: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    """The price entry of `model`, or of the longest configured prefix of it
    (`gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`)."""
    if model in prices:
        return prices[model]
    candidates = [name for name in prices if model.startswith(name)]
    return prices[max(candidates, key=len)] if candidates else None


def cost_usd(
    prices: dict[str, dict[str, float]], model: str, prompt_tokens: int, completion_tokens: int
) -> float | None:
    """USD from a per-1M-token price table; None for a model with no price."""
    price = price_for(prices, model)
    if price is None:
        return None
    total = prompt_tokens * price.get("prompt", 0.0) + completion_tokens * price.get(
        "completion", 0.0
    )
    return round(total / 1_000_000, 8)
