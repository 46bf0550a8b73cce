"""Building applications deployed by import path: import the code in a child process, write
the built deployment specs (or why building failed) back into the app's goal.

Building runs user code (module import, application builder functions), so it never runs in
the controller's own process: a child does it, bounded by BUILD_TIMEOUT_S. The result is
written with a guarded commit, and only if the goal is still the one that was built: a
newer deploy meanwhile supersedes the build.

A term's first build goes to a child started warm when the term began, or for a
controller's first term when the process started (`weir.warm_process`: interpreter up,
Weir's imports done, no user code), which saves the deploy that follows a cluster's start
most of the build's time. It is let go after WARM_CHILD_IDLE_S unused; later builds start
their child cold (a warm child held for every deploy would cost its ~50 MB at all times).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable, Mapping

import structlog

from weir.controller.goal import AppGoal
from weir.etcd.keys import APPS_PREFIX
from weir.etcd.store import Store
from weir.runtime_env import PreparedEnv, RuntimeEnvError, process_env
from weir.warm_process import Assignment, run_assigned, start_warm

log = structlog.get_logger("weir.controller.app_builder")

#: The module a build child runs (`python -m weir.build`).
BUILD_MODULE = "weir.build"
BUILD_TIMEOUT_S = 120.0
#: How long a term's warm build child waits for the first build before it is let go.
WARM_CHILD_IDLE_S = 30.0


def needs_build(goal: AppGoal) -> bool:
    """Whether an app's deployments are not known yet (not built, no build error)."""
    return goal.built_json is None and not goal.build_error


class AppBuilder:
    """Runs at most one build per application at a time."""

    def __init__(self, store: Store, python_executable: str,
                 prepared_env: Callable[[AppGoal], Awaitable[PreparedEnv]],
                 on_built: Callable[[], None]) -> None:
        self.store = store
        self.python = python_executable
        self._prepared_env = prepared_env
        self._on_built = on_built
        self._builds: dict[str, asyncio.Task[None]] = {}
        #: Each app's last build written (its goal's identity).
        self._written: dict[str, tuple[str, float]] = {}
        #: The term's warm build child, being started or waiting (None: none, or taken).
        self._warm: asyncio.Future[subprocess.Popen[bytes]] | None = None
        self._warm_since = 0.0

    @property
    def building(self) -> frozenset[str]:
        """The apps whose build runs now."""
        return frozenset(self._builds)

    def start_warm_child(self, started: asyncio.Future[subprocess.Popen[bytes]] | None = None
                         ) -> None:
        """Start a build child ahead, for the term's first build (the controller process
        calls this as a term begins; tests that build nothing leave it out). `started`: one
        the process started already (`python -m weir.controller` starts one before its
        imports), taken instead."""
        loop = asyncio.get_running_loop()
        self._let_warm_go()
        self._warm_since = loop.time()
        self._warm = started if started is not None else loop.run_in_executor(
            None, start_warm, self.python, BUILD_MODULE)

    def ensure(self, goals: Mapping[str, AppGoal]) -> None:
        """Start a build for every app that needs one and has none running."""
        loop = asyncio.get_running_loop()
        if self._warm is not None and loop.time() - self._warm_since > WARM_CHILD_IDLE_S:
            self._let_warm_go()
        for name, goal in goals.items():
            # A goal read before a build's result was written still looks unbuilt.
            if (needs_build(goal) and name not in self._builds
                    and self._written.get(name) != _identity(goal)):
                self._builds[name] = loop.create_task(self._build(goal))

    async def stop(self) -> None:
        """Cancel running builds (the next leader starts them again)."""
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._let_warm_go()

    def _let_warm_go(self) -> None:
        """End the warm child and reap it, off the loop."""
        warm, self._warm = self._warm, None
        if warm is not None:
            let_warm_child_go(warm)

    async def _take_warm(self) -> subprocess.Popen[bytes] | None:
        """The warm child if there is one still waiting (None: start a cold one)."""
        warm, self._warm = self._warm, None
        if warm is None:
            return None
        try:
            proc = await warm
        except OSError:
            return None
        return proc if proc.poll() is None else None

    async def _build(self, goal: AppGoal) -> None:
        # The build counts as running until its result is written: a pass in between would
        # see the goal still unbuilt and build it again (every build pickles a new version,
        # so the second would roll the replicas the first had started).
        try:
            try:
                built_json, error = await self._run_build(goal)
            except RuntimeEnvError as exc:
                built_json, error = None, str(exc)
            await self._write_result(goal, built_json, error)
        finally:
            self._builds.pop(goal.name, None)

    async def _write_result(self, goal: AppGoal, built_json: str | None, error: str) -> None:
        current = await self.store.get(APPS_PREFIX + goal.name)
        if current is None:
            return
        latest = AppGoal.from_bytes(current.value)
        if _identity(latest) != _identity(goal):
            return  # a newer deploy superseded this build
        latest.built_json, latest.build_error = built_json, error
        await self.store.commit(puts={APPS_PREFIX + goal.name: latest.to_bytes()},
                                expect_mod_revision={APPS_PREFIX + goal.name:
                                                     current.mod_revision})
        self._written[goal.name] = _identity(goal)
        log.info("built application", app=goal.name, error=error or None)
        self._on_built()

    async def _run_build(self, goal: AppGoal) -> tuple[str | None, str]:
        env = await self._prepared_env(goal)
        import_path = goal.config["import_path"]
        args = ["--import-path", import_path, "--app-name", goal.name, "--args-json",
                json.dumps(goal.config.get("args") or {})]
        warm = await self._take_warm()
        loop = asyncio.get_running_loop()
        # subprocess (vfork + exec) in a worker thread rather than asyncio's subprocess: the
        # event loop's fork() runs gRPC's fork handlers in the child, which can crash it.
        try:
            if warm is not None:
                assignment = Assignment(args, env.cwd, process_env(env))
                returncode, out, err = await loop.run_in_executor(
                    None, run_assigned, warm, assignment, BUILD_TIMEOUT_S)
            else:
                returncode, out, err = await loop.run_in_executor(
                    None, _run_process, [self.python, "-m", BUILD_MODULE, *args], env.cwd,
                    process_env(env), BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, (f"importing {import_path!r} did not finish within "
                          f"{BUILD_TIMEOUT_S:.0f} s")
        return build_outcome(import_path, returncode, out, err)


def _identity(goal: AppGoal) -> tuple[str, float]:
    """What tells one deploy's build from another's."""
    return goal.build_key, goal.deployment_timestamp


def build_outcome(import_path: str, returncode: int, out: bytes,
                  err: bytes) -> tuple[str | None, str]:
    """(built JSON, error) from what `python -m weir.build` printed."""
    try:
        data = json.loads(out)
        if not isinstance(data, dict) or not ("error" in data or "deployments" in data):
            raise ValueError("unexpected output")
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return None, (f"building {import_path!r} failed (exit code {returncode}): "
                      f"{' '.join(tail)}")
    if "error" in data:
        return None, f"failed to import {import_path!r}: {data['error']}"
    return json.dumps(data), ""


def _run_process(cmd: list[str], cwd: str | None, env: dict[str, str],
                 timeout: float) -> tuple[int, bytes, bytes]:
    """Run a child to completion (blocking: call it in a worker thread)."""
    proc = subprocess.run(cmd, cwd=cwd or None, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def let_warm_child_go(started: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """End a warm build child that will not be used, and reap it, off the loop."""
    started.add_done_callback(_end_warm_child)


def _end_warm_child(started: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    if started.cancelled() or started.exception() is not None:
        return
    # communicate() with no input closes the child's stdin: at EOF without an assignment it
    # exits, and is reaped (its pipes closed) in a worker thread.
    asyncio.get_running_loop().run_in_executor(None, started.result().communicate)
