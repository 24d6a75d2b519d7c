"""The message templates' argsrepr/kwargsrepr: the same text as Celery's `saferepr`."""

from __future__ import annotations

from typing import Any

from celery.utils.saferepr import saferepr
from hypothesis import given, settings
from hypothesis import strategies as st

from service.message_templates import flat_saferepr

scalars = st.one_of(
    st.text(max_size=40), st.integers(), st.floats(), st.booleans(), st.none(),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=10), inner, max_size=5),
    ),
    max_leaves=12,
)
containers = st.one_of(
    st.lists(values, max_size=6), st.tuples(), st.tuples(values), st.tuples(values, values),
    st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), values, max_size=6),
)  # fmt: skip


flat = st.one_of(
    st.lists(scalars, max_size=6), st.tuples(), st.tuples(scalars), st.tuples(scalars, scalars),
    st.dictionaries(st.text(max_size=12), scalars, max_size=6),
)  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(flat, st.sampled_from([None, 30, 64, 200, 1024]), st.integers(1, 4))
def test_flat_values_take_the_direct_path_and_read_as_saferepr_writes_them(
    value: Any, maxlen: int | None, levels: int
) -> None:
    """What submissions carry (flat containers of scalars), so the direct path is what is
    compared here; the nested, cut and odd values below mostly go to saferepr itself."""
    assert flat_saferepr(value, maxlen, levels) == saferepr(value, maxlen, maxlevels=levels)


@settings(max_examples=800, deadline=None)
@given(containers, st.sampled_from([None, 1, 2, 8, 30, 64, 1024]), st.integers(0, 4))
def test_flat_saferepr_is_celerys_saferepr(value: Any, maxlen: int | None, levels: int) -> None:
    assert flat_saferepr(value, maxlen, levels) == saferepr(value, maxlen, maxlevels=levels)


def test_a_submissions_kwargs_take_the_direct_path(monkeypatch) -> None:
    """Quotes, backslashes, control characters and non-ASCII text are written as saferepr
    writes them (it escapes only the quote), not as repr does."""
    kwargs = {"user_message": "it's a \\ test\n\x00 é 中", "n": 3, "ok": True, "x": None}
    celerys = saferepr(kwargs, 1024, maxlevels=3)
    assert celerys != repr(kwargs)

    def not_called(*_: Any, **__: Any) -> str:
        raise AssertionError("saferepr was called")

    monkeypatch.setattr("service.message_templates.saferepr", not_called)
    assert flat_saferepr(kwargs, 1024, 3) == celerys
    assert flat_saferepr((), 1024, 3) == "()" and flat_saferepr(("a",), 1024, 3) == "('a',)"
