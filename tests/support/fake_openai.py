"""A local OpenAI-compatible server for tests: streaming chat completions, embeddings,
and scripted faults (429 with Retry-After, 500, 401, slow streams).

The real `openai` SDK in a worker talks to it through OPENAI_BASE_URL. Replies are
deterministic: "Echo: <question>" followed by what the server saw (message count, and
`grounded` when the system prompt carried knowledge base passages), so a test can tell
what context reached the model. Every request body is kept in `requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.background_server import BackgroundServer
from workers.knowledge.embeddings import OfflineEmbedder

API_KEY = "test-key"
EMBEDDING_DIMS = 64


@dataclass
class Fault:
    status: int = 500
    retry_after: float | None = None
    message: str = "injected fault"


class FakeOpenAI(BackgroundServer):
    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        super().__init__(app)
        self.requests: list[dict[str, Any]] = []
        # Faults keyed by a marker that appears in the user's message, so concurrent
        # tests do not take each other's faults: marker -> [Fault, ...] served in order.
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self.embedder = OfflineEmbedder(EMBEDDING_DIMS)
        # A "[slow]" question streams this many extra words, this many seconds apart.
        self.slow_words = 60
        self.slow_delay = 0.4

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1"

    @classmethod
    @contextlib.contextmanager
    def running(cls, slow_words: int = 60, slow_delay: float = 0.4) -> Iterator[FakeOpenAI]:
        """A started server ("[slow]" replies stream `slow_words` more words,
        `slow_delay` seconds apart), stopped on leaving."""
        server = cls()
        server.slow_words, server.slow_delay = slow_words, slow_delay
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def env(self, **extra: Any) -> dict[str, str]:
        """The worker environment that points the SDK here. Its embeddings are the offline
        embedder's hashed ones, not OpenAI's: the floor for OpenAI's (0.25) does not fit
        them, so none unless a test sets one."""
        return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": self.url,
                "KNOWLEDGE_MIN_SCORE": "0", **extra}  # fmt: skip

    def fail(self, marker: str, *faults: Fault) -> None:
        with self._lock:
            self._faults.setdefault(marker, []).extend(faults)

    def chat_requests(self, marker: str) -> list[dict[str, Any]]:
        return [
            r for r in self.requests
            if "messages" in r and marker in r["messages"][-1]["content"]
        ]  # fmt: skip

    def _take_fault(self, text: str) -> Fault | None:
        with self._lock:
            for marker, faults in self._faults.items():
                if marker in text and faults:
                    return faults.pop(0)
        return None

    def _refuse(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        refused = self._refuse(request)
        if refused:
            return refused
        question = body["messages"][-1]["content"]
        fault = self._take_fault(question)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return _error(fault.status, fault.message, headers=headers)
        grounded = "knowledge base" in body["messages"][0]["content"]
        reply = f"Echo: {question} | messages={len(body['messages'])}"
        reply += " | grounded" if grounded else ""
        words = [w + " " for w in reply.split(" ")]
        words[-1] = words[-1].rstrip()
        delay = self.slow_delay if "[slow]" in question else 0.0
        if "[slow]" in question:
            words = words + [f"more{i} " for i in range(self.slow_words)]
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        model = body["model"] + "-2024-07-18"
        if not body.get("stream"):
            return web.json_response(_completion(model, "".join(words), usage))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in words:
            await _sse(response, _chunk(model, {"content": word}, None))
            if delay:
                await asyncio.sleep(delay)
        await _sse(response, _chunk(model, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await _sse(response, {**_chunk(model, {}, None), "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        refused = self._refuse(request)
        if refused:
            return refused
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        fault = self._take_fault(" ".join(texts))
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return _error(fault.status, fault.message, headers=headers)
        vectors = self.embedder.embed(texts)
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )


def _error(
    status: int, message: str, code: str | None = None, headers: dict | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": "test_error", "code": code}}
    return web.json_response(body, status=status, headers=headers or {})


def _chunk(model: str, delta: dict, finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(model: str, text: str, usage: dict) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


async def _sse(response: web.StreamResponse, payload: dict) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())
