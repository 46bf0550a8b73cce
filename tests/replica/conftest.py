"""Shared by the replica's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from weir import multiplex


@pytest.fixture(autouse=True)
def no_model_watchers() -> Iterator[None]:
    """Forget the model-cache watchers a test's sessions registered (each is bound to that
    test's event loop, closed once it ends)."""
    yield
    multiplex._watchers.clear()
