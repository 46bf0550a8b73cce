"""`weir run --reload`: notice that an application's code changed, so the command redeploys it.

Design. Ray's `serve run --reload` watches the working directory and redeploys on every
change. Weir watches each application's local code (its runtime_env's working_dir and
py_modules, which is where `--app-dir` and `--working-dir` put it), with `watchfiles` when
it is installed and otherwise by comparing modification times, a pass every half second.
The comparison is a pure function over two snapshots; the snapshot skips what is not code
a replica imports (hidden folders, `__pycache__`, compiled files), so that an import in a
replica, which writes `.pyc` files, does not trigger another redeploy.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from weir.packages.shipping import local_code

#: Seconds between two snapshots of the polling watcher.
POLL_INTERVAL_S = 0.5
#: Parts of a path that never trigger a reload.
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")

Snapshot = dict[str, int]


def watched_roots(config: Mapping[str, Any], app_dir: str) -> list[Path]:
    """The folders and files whose change redeploys: every application's local code, else
    `app_dir` (where the import path is found)."""
    roots = [Path(code.path).expanduser().resolve() for code in local_code(config)]
    return sorted(set(roots)) or [Path(app_dir).resolve()]


def is_watched(path: str) -> bool:
    """Whether a change to `path` counts (hidden and compiled files do not)."""
    parts = Path(path).parts
    if any(p in _SKIPPED_DIRS or (p.startswith(".") and p not in (".", "..")) for p in parts):
        return False
    return not path.endswith(_SKIPPED_SUFFIXES)


def snapshot(roots: Iterable[Path]) -> Snapshot:
    """Every watched file under `roots` with its modification time (ns)."""
    out: Snapshot = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.stat().st_mtime_ns
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if is_watched(d)]
            for name in files:
                path = os.path.join(folder, name)
                if not is_watched(name):
                    continue
                try:
                    out[path] = os.stat(path).st_mtime_ns
                except OSError:
                    continue  # removed while walking: the next snapshot says so
    return out


def changed_files(before: Snapshot, after: Snapshot) -> list[str]:
    """Files added, removed or modified between two snapshots. Pure."""
    return sorted({p for p in before.keys() | after.keys() if before.get(p) != after.get(p)})


class CodeWatcher:
    """Changes under some roots, polled without blocking: `changes()` returns the files
    changed since the last call (empty if none)."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self._stop = threading.Event()
        self._found: queue.Queue[list[str]] = queue.Queue()
        try:
            import watchfiles
        except ImportError:
            watchfiles = None
        self.backend = "watchfiles" if watchfiles is not None else "polling"
        self._last = snapshot(roots) if watchfiles is None else {}
        self._thread = threading.Thread(target=self._watch if watchfiles else self._poll,
                                        name="weir-reload-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            now = snapshot(self.roots)
            found = changed_files(self._last, now)
            self._last = now
            if found:
                self._found.put(found)

    def _watch(self) -> None:  # pragma: no cover - only where watchfiles is installed
        import watchfiles

        def counts(_change: Any, path: str) -> bool:
            # Judge the path below its root: a root may itself sit in a hidden folder.
            for root in self.roots:
                if path.startswith(str(root)):
                    return is_watched(os.path.relpath(path, root))
            return is_watched(path)

        for batch in watchfiles.watch(*self.roots, stop_event=self._stop, watch_filter=counts):
            self._found.put(sorted({path for _change, path in batch}))

    def changes(self) -> list[str]:
        """The files changed since the last call."""
        out: set[str] = set()
        while True:
            try:
                out.update(self._found.get_nowait())
            except queue.Empty:
                return sorted(out)

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(timeout=2)
