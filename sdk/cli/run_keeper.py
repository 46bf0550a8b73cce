"""The wait of `weir run` on its embedded cluster, in a process that holds almost nothing.

Why. Once its application runs, `weir run` only waits: for Ctrl-C (SIGINT or SIGTERM), or
for `weir shutdown` to end the cluster's controllers, and then stops the rest. The process
that deployed has grpc, protobuf, pydantic, click and the packer imported: ~26 MB of memory
no page of which is shared, an eighth of an idle one-replica cluster. So, for its
embedded cluster and without --reload, `weir run` execs this module as a script (same PID,
same terminal; `python -I -S`, the standard library only: ~5 MB) to wait, and the wait, once
over, execs `python -m weir.cli.run_keeper --stop` to stop the cluster with the usual code
(`weir.cli.local_cluster.stop_cluster`).

A signal that comes while `weir run` hands over is not lost: it blocks SIGINT and SIGTERM
before the exec, a blocked signal stays pending across it, and the wait takes signals with
`sigtimedwait`, pending ones first.

Run as a script, this module must import nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

#: The signals that end `weir run`.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
#: How often the wait looks whether the controllers are gone.
POLL_S = 0.5
#: What `weir run` prints when `weir shutdown` ended its cluster's controllers.
SHUT_DOWN_MESSAGE = "The cluster was shut down."


def controller_pids(state: dict[str, object]) -> list[int]:
    """The PIDs of the controllers in a saved ClusterInfo (its `pids`, by name)."""
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    return [int(pid) for name, pid in pids.items() if str(name).startswith("controller-")]


def exited(pid: int) -> bool:
    """Whether our child `pid` has exited (reaping it), or is not our child at all."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def wait_for_end(controllers: Iterable[int],
                 next_signal: Callable[[float], int | None],
                 gone: Callable[[int], bool] = exited) -> bool:
    """Wait until a stop signal comes or every controller has exited; True if it was the
    controllers (`weir shutdown`), False if a signal."""
    left = set(controllers)
    while True:
        if next_signal(POLL_S) is not None:
            return False
        left = {pid for pid in left if not gone(pid)}
        if not left:
            return True


def _next_signal(timeout: float) -> int | None:
    info = signal.sigtimedwait(STOP_SIGNALS, timeout)
    return None if info is None else info.si_signo


def hand_over(state_file: Path, stopping: Callable[[], bool]) -> None:
    """Called by `weir run` (its cluster started and its app running): become the wait.

    Returns only if `stopping()` says a stop signal came before they were blocked (the
    caller stops the cluster then); else does not return. The caller has saved the
    cluster's ClusterInfo to `state_file`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if stopping():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-I", "-S", __file__, str(state_file)])


def _wait(state_file: Path) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # already, when exec'd
    state = json.loads(state_file.read_text())
    shut_down = wait_for_end(controller_pids(state), _next_signal)
    argv = [sys.executable, "-m", "weir.cli.run_keeper", "--stop", str(state_file)]
    os.execv(sys.executable, argv + (["--shut-down"] if shut_down else []))


def _stop(state_file: Path, shut_down: bool) -> None:
    from weir.cli.cluster_state import ClusterInfo
    from weir.cli.local_cluster import stop_cluster

    if shut_down:
        print(SHUT_DOWN_MESSAGE, file=sys.stderr)
    print("Stopping the local cluster...", file=sys.stderr)
    stop_cluster(ClusterInfo.read(state_file))


def main(argv: Sequence[str] | None = None) -> None:
    """`run_keeper.py STATE` waits; `-m weir.cli.run_keeper --stop STATE [--shut-down]`
    stops. (No argparse: the wait imports as little as it can.)"""
    args = list(sys.argv[1:] if argv is None else argv)
    stop, shut_down = "--stop" in args, "--shut-down" in args
    rest = [a for a in args if a not in ("--stop", "--shut-down")]
    if len(rest) != 1:
        sys.exit("usage: run_keeper.py [--stop [--shut-down]] STATE_FILE")
    if stop:
        _stop(Path(rest[0]), shut_down)
    else:
        _wait(Path(rest[0]))


if __name__ == "__main__":
    main()
