"""A garbage collection that holds the process for long is logged."""

from __future__ import annotations

import gc

import pytest
from structlog.testing import capture_logs

from weir import gc_watch


def test_a_slow_collection_is_logged_and_a_quick_one_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gc_watch.watch_collections()
    gc_watch.watch_collections()  # once, however often called
    assert gc.callbacks.count(gc_watch._on_collection) == 1
    try:
        monkeypatch.setattr(gc_watch, "SLOW_COLLECTION_MS", 1e9)
        with capture_logs() as quick:
            gc.collect()
        monkeypatch.setattr(gc_watch, "SLOW_COLLECTION_MS", 0.0)
        with capture_logs() as slow:
            gc.collect()
    finally:
        gc.callbacks.remove(gc_watch._on_collection)
    assert [e for e in quick if e["event"] == "slow garbage collection"] == []
    logged = [e for e in slow if e["event"] == "slow garbage collection"]
    assert len(logged) == 1 and logged[0]["generation"] == 2
    assert 0 <= logged[0]["cpu_ms"] <= logged[0]["ms"] + 1  # a thread's CPU, within wall
