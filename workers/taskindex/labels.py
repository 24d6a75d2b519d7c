"""A task's tags and metadata: their limits, and the labels that index them.

A submission may carry `tags` (a few short strings) and `metadata` (a small JSON object).
Both are kept on the record as given. Each tag, and each metadata pair whose value is a
short scalar, also becomes a label (`tag:<tag>`, `meta:<key>=<value>`) under which the
task is indexed like under its state or owner (record.lua: one sorted set per owner and
label, one per label for admins), so `GET /list?tag=...&metadata=key=value` is a range of
one index at any history size. Metadata values are matched as text: `{"n": 42}` is found
by `metadata=n=42`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_TAGS = 10
TAG = re.compile(r"[A-Za-z0-9_.:/-]{1,64}\Z")  # matched from the start
MAX_METADATA_KEYS = 16
METADATA_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_METADATA_BYTES = 4096
# Longer metadata values are kept but not indexed (not found by a filter).
MAX_INDEXED_VALUE = 128
# How the labels are kept in the record's `labels` field (record.lua splits on it).
SEPARATOR = "\n"


def value_text(value: Any) -> str | None:
    """A metadata value as matched by a filter; None for one that is not indexed (an
    object, a list, or a value longer than MAX_INDEXED_VALUE)."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        return None
    return text if len(text) <= MAX_INDEXED_VALUE and SEPARATOR not in text else None


def tag_label(tag: str) -> str:
    return f"tag:{tag}"


def metadata_label(key: str, text: str) -> str:
    return f"meta:{key}={text}"


def labels(tags: Sequence[str] | None, metadata: Mapping[str, Any] | None) -> list[str]:
    """The labels a task is indexed under."""
    out = [tag_label(t) for t in dict.fromkeys(tags or ())]
    for key, value in (metadata or {}).items():
        text = value_text(value)
        if text is not None:
            out.append(metadata_label(key, text))
    return out


def metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why `metadata` is refused, or None."""
    if len(metadata) > MAX_METADATA_KEYS:
        return f"at most {MAX_METADATA_KEYS} keys"
    bad = [k for k in metadata if not METADATA_KEY.fullmatch(k)]
    if bad:
        return f"keys are 1-64 of A-Z a-z 0-9 _ . - ({bad[0]!r} is not)"
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        return f"at most {MAX_METADATA_BYTES} bytes as JSON"
    return None
