"""The lean wait of `weir run`: when it ends, and what it stops (pure parts; the exec and
the stop run for real in tests/e2e/test_cli_run.py)."""

from __future__ import annotations

import subprocess
import sys

from weir.cli import run_keeper


def test_the_controllers_of_a_saved_cluster_are_found_by_name() -> None:
    state = {"pids": {"etcd": 10, "controller-0": 11, "controller-1": 12, "proxy": 13,
                      "node-agent": 14}}
    assert run_keeper.controller_pids(state) == [11, 12]


def test_a_signal_ends_the_wait_before_the_controllers_are_looked_at() -> None:
    looked: list[int] = []

    def gone(pid: int) -> bool:
        looked.append(pid)
        return False

    assert run_keeper.wait_for_end([1, 2], lambda timeout: 2, gone) is False
    assert looked == []


def test_the_wait_ends_once_every_controller_is_gone() -> None:
    exits = {1: 3, 2: 1}  # polls until each is gone
    polls = {1: 0, 2: 0}

    def gone(pid: int) -> bool:
        polls[pid] += 1
        return polls[pid] >= exits[pid]

    signals = iter([None, None, None, None])
    assert run_keeper.wait_for_end([1, 2], lambda timeout: next(signals), gone) is True
    assert polls == {1: 3, 2: 1}  # a controller found gone is not looked at again


def test_the_wait_imports_only_the_standard_library() -> None:
    code = ("import runpy, sys; runpy.run_path(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith(('weir', 'grpc', 'google'))))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, run_keeper.__file__],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
