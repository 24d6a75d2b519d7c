"""Conversation memory in Redis: prior turns sent as context, bounded by a budget.

Layout (prefix `claw:conv:<owner>:<conversation id>:`, see `conversation_key`): `turns` a
list of JSON messages (oldest first, capped), `meta` a hash (knowledge base id, user id),
`tasks` a set of the task ids whose turns are stored, so a task delivered twice does not
store its turn twice. `<owner>` is the owner's namespace (`workers.core.ownership`): the same
conversation id from two owners is two conversations, and a store reads and writes one
owner's conversations only.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from workers.ai.llm import estimate_tokens
from workers.core.keys import conversation_key
from workers.core.lua import lua_file

# Turns kept per conversation; context sent to the model is bounded further by settings.
STORED_MESSAGES = 200


Part = Literal["turns", "meta", "tasks"]


def append_turns_call(
    owner: str | None, conversation_id: str, task_id: str | None, ttl: int, messages: list[dict]
) -> tuple[list[str], list[Any]]:
    """workers/ai/scripts/append_turns.lua's KEYS and ARGV."""
    keys = [conversation_key(owner, conversation_id, part) for part in ("turns", "meta", "tasks")]
    return keys, [task_id or "", ttl, STORED_MESSAGES, *(json.dumps(m) for m in messages)]


class ConversationStore:
    """The conversations of one owner (`None`: the system namespace)."""

    def __init__(self, client: Any, ttl: int, owner: str | None) -> None:
        self.client = client
        self.ttl = ttl
        self.owner = owner
        self._append = client.register_script(lua_file("workers.ai", "append_turns"))

    def _key(self, conversation_id: str, part: Part) -> str:
        return conversation_key(self.owner, conversation_id, part)

    def context(self, conversation_id: str, max_turns: int, max_tokens: int) -> list[dict]:
        """The most recent messages (as `{role, content}`) within both budgets, oldest first.

        A turn is a user message and its reply; the token budget is an estimate.
        """
        if max_turns <= 0 or max_tokens <= 0:
            return []
        raw = self.client.lrange(self._key(conversation_id, "turns"), -2 * max_turns, -1)
        picked: list[dict] = []
        spent = 0
        for text in reversed(raw):
            message = json.loads(text)
            cost = estimate_tokens(message["content"]) + 4
            if spent + cost > max_tokens:
                break
            spent += cost
            picked.append({"role": message["role"], "content": message["content"]})
        picked.reverse()
        # Never start the context with a reply whose question was cut off.
        while picked and picked[0]["role"] != "user":
            picked.pop(0)
        return picked

    def messages(self, conversation_id: str) -> list[dict]:
        return [
            json.loads(t) for t in self.client.lrange(self._key(conversation_id, "turns"), 0, -1)
        ]

    def append_turn(
        self, conversation_id: str, task_id: str | None, user: str, assistant: str, **extra: Any
    ) -> bool:
        """Store a question and its reply; False if this task stored its turn already."""
        now = time.time()
        messages = [
            {"role": "user", "content": user, "ts": now, "task_id": task_id},
            {"role": "assistant", "content": assistant, "ts": now, "task_id": task_id, **extra},
        ]
        keys, args = append_turns_call(self.owner, conversation_id, task_id, self.ttl, messages)
        return bool(self._append(keys=keys, args=args))

    def meta(self, conversation_id: str) -> dict[str, str]:
        return dict(self.client.hgetall(self._key(conversation_id, "meta")))

    def set_meta(self, conversation_id: str, **fields: str) -> None:
        clean = {k: v for k, v in fields.items() if v}
        if clean:
            key = self._key(conversation_id, "meta")
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=clean)
                pipe.expire(key, self.ttl)
                pipe.execute()
