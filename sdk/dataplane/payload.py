"""The pickles a handle call carries: its arguments there, its result back.

cloudpickle is needed for what plain pickle sends by reference and the other side cannot
import (a class or function defined in a driver's `__main__`, a lambda), but it costs ~2 µs
even for `((None,), {})`, against ~0.3 µs for `pickle.dumps`: its Pickler is built per call
and asked about every object. Values made only of built-in scalars, in tuples, lists and
dicts, pickle the same either way, so they take plain pickle; anything else, or a container
too large to check cheaply, takes cloudpickle. Both sides read either with `pickle.loads`.
"""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import cloudpickle

_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
_CONTAINERS = frozenset({tuple, list, dict})
#: How many objects `dumps` looks at before it leaves a value to cloudpickle.
CHECK_BUDGET = 64


def is_plain(value: Any, budget: int = CHECK_BUDGET) -> bool:
    """Whether `value` is built-in scalars in tuples, lists and dicts only (subclasses not
    included: one may be defined in `__main__`), with at most `budget` items in its
    containers."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind not in _CONTAINERS:
        return False
    stack = [value]
    while stack:
        container = stack.pop()
        budget -= len(container)
        if budget < 0:
            return False
        items = (itertools.chain(container.keys(), container.values())
                 if type(container) is dict else container)
        for item in items:
            kind = type(item)
            if kind in _CONTAINERS:
                stack.append(item)
            elif kind not in _SCALARS:
                return False
    return True


def dumps(value: Any) -> bytes:
    """`value` pickled: plain pickle when `is_plain`, else cloudpickle."""
    if is_plain(value):
        return pickle.dumps(value, protocol=cloudpickle.DEFAULT_PROTOCOL)
    return cloudpickle.dumps(value)


def loads(data: bytes) -> Any:
    """The value `dumps` pickled (either way)."""
    return pickle.loads(data)
