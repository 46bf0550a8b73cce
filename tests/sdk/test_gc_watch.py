"""A garbage collection that holds the process for long is logged."""

from __future__ import annotations

import gc
import weakref

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


class Node:
    """An object in a cycle with itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_full_collection_ends_by_freezing_and_a_deep_one_collects_the_frozen() -> None:
    gc.unfreeze()
    gc_watch.watch_collections(freeze_after_full=True)
    try:
        kept = [[n] for n in range(1000)]  # live objects the collector tracks
        gc.collect(1)  # not a full one: nothing frozen
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert gc.get_freeze_count() >= len(kept)
        # A cycle that dies once frozen is out of the collector's sight ...
        node = Node()
        ref = weakref.ref(node)
        gc.collect()  # it survives: frozen
        del node
        gc.collect()
        assert ref() is not None
        # ... until the heap is thawed and collected whole (and frozen again).
        with capture_logs() as logs:
            assert gc_watch.collect_deeply() >= 1
        assert ref() is None
        assert gc.get_freeze_count() >= len(kept)
        # (a "slow garbage collection" line may come too: this process's heap is large)
        assert [e["event"] for e in logs if e["event"] != "slow garbage collection"] == [
            "collected the whole heap"]
    finally:
        gc.callbacks.remove(gc_watch._on_collection)
        gc_watch._freeze_after_full[0] = False
        gc.unfreeze()
