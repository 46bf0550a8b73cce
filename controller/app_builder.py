"""Building applications deployed by import path: import the code in a child process, write
the built deployment specs (or why building failed) back into the app's goal.

Building runs user code (module import, application builder functions), so it never runs in
the controller's own process: a child does it, bounded by BUILD_TIMEOUT_S. The result is
written with a guarded commit, and only if the goal is still the one that was built: a
newer deploy meanwhile supersedes the build.
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

log = structlog.get_logger("weir.controller.app_builder")

BUILD_TIMEOUT_S = 120.0


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

    def ensure(self, goals: Mapping[str, AppGoal]) -> None:
        """Start a build for every app that needs one and has none running."""
        for name, goal in goals.items():
            if needs_build(goal) and name not in self._builds:
                self._builds[name] = asyncio.get_running_loop().create_task(self._build(goal))

    async def stop(self) -> None:
        """Cancel running builds (the next leader starts them again)."""
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _build(self, goal: AppGoal) -> None:
        try:
            built_json, error = await self._run_build(goal)
        except RuntimeEnvError as exc:
            built_json, error = None, str(exc)
        finally:
            self._builds.pop(goal.name, None)
        current = await self.store.get(APPS_PREFIX + goal.name)
        if current is None:
            return
        latest = AppGoal.from_bytes(current.value)
        if (latest.build_key, latest.deployment_timestamp) != (goal.build_key,
                                                               goal.deployment_timestamp):
            return  # a newer deploy superseded this build
        latest.built_json, latest.build_error = built_json, error
        await self.store.commit(puts={APPS_PREFIX + goal.name: latest.to_bytes()},
                                expect_mod_revision={APPS_PREFIX + goal.name:
                                                     current.mod_revision})
        log.info("built application", app=goal.name, error=error or None)
        self._on_built()

    async def _run_build(self, goal: AppGoal) -> tuple[str | None, str]:
        env = await self._prepared_env(goal)
        import_path = goal.config["import_path"]
        cmd = [self.python, "-m", "weir.build", "--import-path", import_path, "--app-name",
               goal.name, "--args-json", json.dumps(goal.config.get("args") or {})]
        # subprocess (vfork + exec) in a worker thread rather than asyncio's subprocess: the
        # event loop's fork() runs gRPC's fork handlers in the child, which can crash it.
        try:
            returncode, out, err = await asyncio.get_running_loop().run_in_executor(
                None, _run_process, cmd, env.cwd, process_env(env), BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, (f"importing {import_path!r} did not finish within "
                          f"{BUILD_TIMEOUT_S:.0f} s")
        return build_outcome(import_path, returncode, out, err)


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
