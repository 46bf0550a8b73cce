"""Shared by the tests of Ray options Weir ignores: a fresh warning registry per test, and
the IgnoredRayOptionWarning an action raises."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from weir.config import ray_options
from weir.exceptions import IgnoredRayOptionWarning


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test sees every name warn again."""
    ray_options.forget_warnings()
    yield
    ray_options.forget_warnings()


def caught(action: Any) -> list[warnings.WarningMessage]:
    """The IgnoredRayOptionWarnings `action()` raises."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        action()
    return [w for w in seen if issubclass(w.category, IgnoredRayOptionWarning)]
