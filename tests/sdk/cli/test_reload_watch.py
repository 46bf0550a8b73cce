"""`weir run --reload`'s watcher: what counts as a change, and the polling watcher."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import wait_for
from weir.cli.reload_watch import (
    CodeWatcher,
    changed_files,
    is_watched,
    snapshot,
    watched_roots,
)


def test_changed_files_are_added_removed_or_modified() -> None:
    before = {"a.py": 1, "b.py": 1, "c.py": 1}
    after = {"a.py": 1, "b.py": 2, "d.py": 1}
    assert changed_files(before, after) == ["b.py", "c.py", "d.py"]
    assert changed_files(before, dict(before)) == []


def test_compiled_and_hidden_files_do_not_count() -> None:
    assert is_watched("pkg/model.py")
    assert is_watched("config.yaml")
    assert not is_watched("pkg/__pycache__/model.cpython-311.pyc")
    assert not is_watched("model.pyc")
    assert not is_watched(".git/HEAD")


def test_snapshot_skips_pycache(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"")
    assert list(snapshot([tmp_path])) == [str(tmp_path / "app.py")]


def test_roots_are_the_apps_local_code_else_the_app_dir(tmp_path: Path) -> None:
    config = {"applications": [{"name": "a", "runtime_env": {"working_dir": str(tmp_path)}},
                               {"name": "b", "runtime_env": {
                                   "working_dir": "https://example.com/code.zip"}}]}
    assert watched_roots(config, "/elsewhere") == [tmp_path.resolve()]
    assert watched_roots({"applications": [{}]}, str(tmp_path)) == [tmp_path.resolve()]


def test_the_watcher_reports_an_edit(tmp_path: Path) -> None:
    module = tmp_path / "app.py"
    module.write_text("x = 1\n")
    watcher = CodeWatcher([tmp_path])
    try:
        assert watcher.changes() == []
        module.write_text("x = 2\n")
        # mtimes may be coarse: make the edit visible whatever the file system's resolution.
        os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 10**9))
        found = wait_for(watcher.changes, 10, "the watcher to see the edit")
        assert found == [str(module)]
    finally:
        watcher.stop()
