"""weir.config.middlewares: entries of http_options.middlewares, applied in Ray's order."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from weir.config.middlewares import (
    MiddlewareError,
    check_entry_shape,
    load_entry,
    pickled_entry,
    wrap,
)


class Layer:
    """Records the wrapping order: each layer names itself around what it wraps."""

    def __init__(self, app: Any, name: str = "layer") -> None:
        self.app, self.name = app, name

    def chain(self) -> list[str]:
        inner = self.app.chain() if isinstance(self.app, Layer) else ["app"]
        return [self.name, *inner]


def inner_app(scope: Any, receive: Any, send: Any) -> None:
    """The app being wrapped."""


def test_the_last_listed_is_outermost_as_in_ray() -> None:
    entries = [pickled_entry(Middleware(Layer, name="first")),
               pickled_entry(Middleware(Layer, name="second"))]
    stack = wrap(inner_app, entries)
    assert isinstance(stack, Layer) and stack.chain() == ["second", "first", "app"]


def test_import_paths_name_classes_or_middleware_objects() -> None:
    cors = load_entry("starlette.middleware.cors:CORSMiddleware")(inner_app)
    assert isinstance(cors, CORSMiddleware)
    obj = load_entry("tests.e2e.apps.http_features:cors_for_example")(inner_app)
    assert isinstance(obj, CORSMiddleware) and obj.allow_origins == ["https://example.com"]


def test_pickled_entry_round_trips_and_names_the_class() -> None:
    entry = pickled_entry(Middleware(CORSMiddleware, allow_origins=["*"]))
    assert entry["name"] == "CORSMiddleware" and check_entry_shape(entry) == entry
    assert load_entry(entry)(inner_app).allow_all_origins  # type: ignore[attr-defined]


def test_errors_name_the_entry() -> None:
    with pytest.raises(MiddlewareError, match="'no_such_module:X' cannot be loaded"):
        load_entry("no_such_module:X")
    with pytest.raises(TypeError, match="not a middleware"):
        pickled_entry(42)
    with pytest.raises(ValueError, match="import path"):
        check_entry_shape({"name": "x"})
    with pytest.raises(ValueError, match="base64"):
        check_entry_shape({"name": "x", "cloudpickle": "not base64!"})
    broken = pickled_entry(Middleware(Layer, bad_option=1))
    with pytest.raises(MiddlewareError, match=r"middleware 0 Layer .* raised when applied"):
        wrap(inner_app, [broken])
