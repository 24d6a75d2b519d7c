"""Splitting a document into overlapping chunks for embedding."""

from __future__ import annotations

import re

_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def split_text(text: str, size: int = 800, overlap: int = 100) -> list[str]:
    """Chunks of at most `size` characters; each repeats the last ~`overlap` of the previous.

    A chunk ends at the last paragraph, line, sentence or word break in its window when
    there is one in its second half, so passages are not cut mid-word.
    """
    if overlap >= size:
        raise ValueError("overlap must be smaller than size")
    text = re.sub(r"[ \t]+", " ", text).strip()
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start:end]
            for mark in _BREAKS:
                cut = window.rfind(mark)
                if cut >= size // 2:
                    end = start + cut + len(mark)
                    break
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        # Step back by the overlap, to a word start when one is near.
        next_start = max(end - overlap, start + 1)
        space = text.find(" ", next_start, end)
        start = space + 1 if 0 <= space < end - 1 else next_start
    return chunks
