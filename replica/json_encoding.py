"""What a deployment returns, as JSON: the encoding FastAPI gives a route's return value.

Ray Serve answers an HTTP call with whatever the deployment returned, encoded as FastAPI
would: pydantic models, dataclasses, datetimes, enums, UUIDs, sets and any Mapping all
become JSON. Where FastAPI is installed its own `jsonable_encoder` is used, so that Weir
gives exactly FastAPI's output; otherwise pydantic's (always installed: Weir's config is
pydantic) does the same for the common types, with Mappings and other iterables turned into
dicts and lists first, as FastAPI does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import pydantic_core


def _with_pydantic(value: Any) -> Any:
    def fallback(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {_with_pydantic(k): _with_pydantic(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set, frozenset)):
            return [_with_pydantic(x) for x in v]
        raise TypeError(f"{type(v).__name__} is not JSON serializable")

    return pydantic_core.to_jsonable_python(value, fallback=fallback)


@functools.cache
def _encoder() -> Callable[[Any], Any]:
    # Chosen at the first JSON value, not at import: importing fastapi costs ~0.17 s and
    # ~15 MB, which a replica answering str, bytes or Responses never needs.
    try:
        from fastapi.encoders import jsonable_encoder
    except ImportError:
        return _with_pydantic
    return jsonable_encoder  # type: ignore[no-any-return]


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data (dict, list, str, numbers, bool, None); raises TypeError
    naming the type that has no JSON form."""
    try:
        return _encoder()(value)
    except (TypeError, ValueError, pydantic_core.PydanticSerializationError) as exc:
        raise TypeError(str(exc)) from None
