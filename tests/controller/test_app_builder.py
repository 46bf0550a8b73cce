"""Building an app in a child process: the term's warm child, and one build per deploy."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from weir.controller import app_builder
from weir.controller.app_builder import AppBuilder
from weir.controller.goal import AppGoal
from weir.etcd.keys import APPS_PREFIX
from weir.etcd.memory_store import MemoryStore
from weir.runtime_env import PreparedEnv
from weir.warm_process import start_warm

APP = '''
from weir import serve

@serve.deployment
class Echo:
    def __call__(self, request):
        return "hi"

app = Echo.bind()
'''


async def built_goal(store: MemoryStore, name: str, timeout: float = 60.0) -> AppGoal:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kv = await store.get(APPS_PREFIX + name)
        if kv is not None and (goal := AppGoal.from_bytes(kv.value)).built_json:
            return goal
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was not built within {timeout} s")


@pytest.mark.parametrize("started_with_the_process", [False, True])
def test_the_first_build_of_a_term_runs_in_the_warm_child_and_runs_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started_with_the_process: bool) -> None:
    # started_with_the_process: `python -m weir.controller` starts the child before its own
    # imports and its first term takes it.
    (tmp_path / "builder_test_app.py").write_text(APP)

    def no_cold_child(*_: object) -> tuple[int, bytes, bytes]:
        raise AssertionError("a cold build child was started")

    monkeypatch.setattr(app_builder, "_run_process", no_cold_child)

    async def scenario() -> None:
        store = MemoryStore()
        goal = AppGoal("a", {"import_path": "builder_test_app:app"}, 1.0, "key")
        await store.put(APPS_PREFIX + "a", goal.to_bytes())

        async def prepared(_: AppGoal) -> PreparedEnv:
            return PreparedEnv(cwd=str(tmp_path))

        woken: list[int] = []
        builder = AppBuilder(store, sys.executable, prepared, lambda: woken.append(1))
        given = None
        if started_with_the_process:
            given = asyncio.get_running_loop().create_future()
            given.set_result(start_warm(sys.executable, app_builder.BUILD_MODULE))
        builder.start_warm_child(given)
        warm = await builder._warm  # type: ignore[misc]
        assert given is None or warm is given.result()
        builder.ensure({"a": goal})
        built = await built_goal(store, "a")
        assert built.built is not None and built.built.ingress == "Echo"
        assert warm.wait(10) == 0  # the warm child did the build and exited
        # A pass that read the goal before the result was written sees it unbuilt: it must
        # not build it again (each build pickles a new version: replicas would roll).
        builder.ensure({"a": goal})
        assert builder.building == frozenset()
        assert woken == [1]
        await builder.stop()

    asyncio.run(scenario())


def test_a_warm_child_not_used_is_let_go_when_the_term_ends() -> None:
    async def scenario() -> None:
        async def prepared(_: AppGoal) -> PreparedEnv:
            return PreparedEnv()

        builder = AppBuilder(MemoryStore(), sys.executable, prepared, lambda: None)
        builder.start_warm_child()
        warm = await builder._warm  # type: ignore[misc]
        await builder.stop()
        assert await asyncio.to_thread(warm.wait, 30) == 0

    asyncio.run(scenario())
