"""Text embeddings: OpenAI's when configured, else an offline one that needs no network."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Protocol

from workers.core.settings import Settings

OFFLINE_PREFIX = "offline-hash"
_TOKEN = re.compile(r"\w+", re.UNICODE)


# A passage's text -> whether it can match a query at all, whatever its score.
PassageFilter = Callable[[str], bool]


class Embedder(Protocol):
    model: str
    offline: bool
    # KNOWLEDGE_MIN_SCORE's default with this embedder: a passage scoring this (cosine) or
    # less is no match.
    min_score: float

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...

    def passage_filter(self, query: str) -> PassageFilter | None:
        """Which passages can match `query` besides their score (None: any)."""
        ...


class OfflineEmbedder:
    """Hashed bag of words and character trigrams, unit length.

    No network and fully deterministic: good enough to find passages that share words
    with a query in development; not a semantic model, and labeled as such.

    Its scores alone cannot tell nonsense from a match: hashing puts unrelated words in
    the same slots. Against a hundred 800-character chunks a nonsense query's best score
    is about 0.14 (0.3 at worst), while the chunk holding one word of a query scores about
    0.13 for it (three words: 0.22). So a passage matches only if it shares a word (or a
    form of one) with the query (`passage_filter`); the score ranks those (above 0, its
    default floor).
    """

    offline = True
    min_score = 0.0

    def __init__(self, dims: int = 256) -> None:
        self.dims = dims
        self.model = f"{OFFLINE_PREFIX}-{dims}"

    def _features(self, text: str) -> list[str]:
        words = [w.lower() for w in _TOKEN.findall(text)]
        grams = [w[i : i + 3] for w in words if len(w) > 3 for i in range(len(w) - 2)]
        return words + words + grams  # whole words weigh more than their trigrams

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vector = [0.0] * self.dims
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dims
                vector[slot] += 1.0 if digest[4] & 1 else -1.0
            out.append(normalize(vector))
        return out

    def passage_filter(self, query: str) -> PassageFilter:
        """Passages sharing a word with `query` (case-insensitive), or a form of one: the
        same word but for an ending of up to 3 letters (telescope, telescopes; descaled,
        descaling), the two alike in their first 4 letters at least."""
        words = set(_TOKEN.findall(query.lower()))
        forms: dict[str, list[str]] = {}
        for word in words:
            if len(word) >= 4:
                forms.setdefault(word[:4], []).append(word)

        def shares_a_word(text: str) -> bool:
            for word in _TOKEN.findall(text.lower()):
                if word in words:
                    return True
                for other in forms.get(word[:4], ()):
                    if _common_prefix(word, other) >= min(len(word), len(other)) - 3:
                        return True
            return False

        return shares_a_word


class OpenAIEmbedder:
    """OpenAI (or compatible) embeddings; errors are mapped by `workers.ai.llm.provider_errors`.

    With text-embedding-3-* unrelated text (and nonsense) scores about 0.0-0.2 against a
    passage, a related question about 0.3 and up: 0.25 is the default floor. Other models
    score on other scales (ada-002: unrelated text about 0.7): set KNOWLEDGE_MIN_SCORE.
    """

    offline = False
    min_score = 0.25

    def __init__(self, settings: Settings) -> None:
        from workers.ai.llm import openai_client

        self.client = openai_client(settings)
        self.model = settings.openai_embedding_model

    def embed(self, texts: list[str]) -> list[list[float]]:
        from workers.ai.llm import provider_errors

        with provider_errors():
            response = self.client.embeddings.create(model=self.model, input=texts)
        ordered = sorted(response.data, key=lambda item: item.index)
        return [normalize(list(item.embedding)) for item in ordered]

    def passage_filter(self, query: str) -> None:
        return None  # a semantic model: a passage may match without a word in common


def embedder_for(settings: Settings) -> Embedder:
    """OpenAI embeddings when an API key is set; the offline embedder otherwise."""
    if settings.openai_api_key is not None and settings.openai_api_key.get_secret_value():
        return OpenAIEmbedder(settings)
    return OfflineEmbedder(settings.offline_embedding_dims)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def min_score(settings: Settings, embedder: Embedder) -> float:
    """The relevance floor of a search: KNOWLEDGE_MIN_SCORE, or the embedder's default."""
    configured = settings.knowledge_min_score
    return embedder.min_score if configured is None else configured


def normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
