"""Handle calls' pickles: plain values take plain pickle, anything else cloudpickle, and
the other side reads both the same way."""

from __future__ import annotations

import pickle

import cloudpickle
from hypothesis import given
from hypothesis import strategies as st

from weir.dataplane import payload

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() \
    | st.binary()
plain = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.tuples(inner, inner)
                     | st.dictionaries(st.text(max_size=3), inner, max_size=4), max_leaves=20)


@given(plain)
def test_plain_values_take_plain_pickle_and_come_back_equal(value: object) -> None:
    data = payload.dumps(value)
    assert payload.loads(data) == value
    if payload.is_plain(value):
        assert data == pickle.dumps(value, protocol=cloudpickle.DEFAULT_PROTOCOL)


def test_what_plain_pickle_cannot_send_goes_by_cloudpickle() -> None:
    class Local:  # not importable by name, as a class of a driver's __main__
        def __init__(self, x: int) -> None:
            self.x = x

    class Count(int):
        pass

    for value in [((Local(3),), {}), lambda: 1, ((Count(2),), {}), {"k": {1, 2}}]:
        assert not payload.is_plain(value)
        data = payload.dumps(value)
        assert data == cloudpickle.dumps(value)
        pickle.loads(data)  # readable the same way


def test_a_container_beyond_the_budget_is_left_to_cloudpickle() -> None:
    small, large = list(range(payload.CHECK_BUDGET)), list(range(payload.CHECK_BUDGET + 1))
    assert payload.is_plain(small)
    assert not payload.is_plain(large)
    assert payload.loads(payload.dumps(large)) == large
