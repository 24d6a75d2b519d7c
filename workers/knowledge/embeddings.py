"""Text embeddings: OpenAI's when configured, else an offline one that needs no network."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Protocol

from workers.core.settings import Settings

OFFLINE_PREFIX = "offline-hash"
_TOKEN = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    model: str
    offline: bool

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


class OfflineEmbedder:
    """Hashed bag of words and character trigrams, unit length.

    No network and fully deterministic: good enough to find passages that share words
    with a query in development; not a semantic model, and labeled as such.
    """

    offline = True

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


class OpenAIEmbedder:
    """OpenAI (or compatible) embeddings; errors are mapped by `workers.ai.llm.provider_errors`."""

    offline = False

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


def embedder_for(settings: Settings) -> Embedder:
    """OpenAI embeddings when an API key is set; the offline embedder otherwise."""
    if settings.openai_api_key is not None and settings.openai_api_key.get_secret_value():
        return OpenAIEmbedder(settings)
    return OfflineEmbedder(settings.offline_embedding_dims)


def normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
