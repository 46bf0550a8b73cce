"""The parts of calling user code that need nothing running: who gets the request, and how
return values become HTTP responses."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import functools
import json
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from weir.replica import json_encoding
from weir.replica.user_callable import plain_response, takes_request, to_response


class Handler:
    def with_request(self, request: Any) -> None: ...
    def without(self) -> None: ...
    def keyword_only(self, *, request: Any = None) -> None: ...
    def star(self, *args: Any) -> None: ...


def no_params() -> str:
    return "x"


def test_only_callables_with_a_positional_parameter_get_the_request() -> None:
    h = Handler()
    assert takes_request(h.with_request)
    assert not takes_request(h.without)
    assert not takes_request(h.keyword_only)
    assert takes_request(h.star)
    assert not takes_request(no_params)
    assert takes_request(lambda request: None)

    @functools.wraps(no_params)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return no_params(*args, **kwargs)

    assert not takes_request(wrapper)  # the wrapped signature counts, as for @serve.batch


class Colour(enum.Enum):
    RED = "red"


class Item(pydantic.BaseModel):
    name: str
    at: datetime.datetime


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Frozen(Mapping[str, int]):
    def __init__(self, **items: int) -> None:
        self._items = items

    def __getitem__(self, key: str) -> int:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


CASES: list[tuple[Any, Any]] = [
    (Item(name="a", at=datetime.datetime(2024, 1, 2, 3, 4, 5)),
     {"name": "a", "at": "2024-01-02T03:04:05"}),
    (Point(1, 2), {"x": 1, "y": 2}),
    (datetime.date(2024, 5, 6), "2024-05-06"),
    ({"colour": Colour.RED, "points": [Point(0, 1)]}, {"colour": "red",
                                                      "points": [{"x": 0, "y": 1}]}),
    (MappingProxyType({"a": 1}), {"a": 1}),
    (Frozen(b=2), {"b": 2}),
    ((1, 2), [1, 2]),
    (None, None),
    (3.5, 3.5),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_return_values_are_encoded_as_fastapi_does(value: Any, expected: Any) -> None:
    response = to_response(value)
    assert response.media_type == "application/json"
    assert json.loads(response.body) == expected


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_the_encoder_without_fastapi_gives_the_same(value: Any, expected: Any) -> None:
    assert json_encoding._with_pydantic(value) == expected


def test_a_value_with_no_json_form_names_its_type() -> None:
    with pytest.raises(TypeError, match=r"type object .*FastAPI can encode"):
        to_response(object())


@given(st.text() | st.binary())
def test_a_str_or_bytes_result_is_sent_as_starlette_sends_it(result: str | bytes) -> None:
    async def played(response: Any) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(dict(message))

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        await response({"type": "http"}, receive, send)
        return sent

    plain = plain_response(result)
    assert plain is not None
    headers, body = plain
    assert asyncio.run(played(to_response(result))) == [
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": body}]
    assert plain_response(bytearray(b"x")) is None  # left to starlette
