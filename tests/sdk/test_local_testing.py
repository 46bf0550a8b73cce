"""serve.run(..., _local_testing_mode=True): the app runs in this process, no cluster."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.sdk.test_multiplex import Inferencer
from weir import serve
from weir.handle import DeploymentHandle


@pytest.fixture(autouse=True)
def local_only() -> Iterator[None]:
    # No cluster may be reached: a call that went to one would fail for want of one.
    saved = {k: os.environ.pop(k) for k in ("WEIR_ADDRESS", "WEIR_ETCD_ENDPOINTS")
             if k in os.environ}
    yield
    serve.shutdown()
    os.environ.update(saved)


@serve.deployment(user_config={"suffix": "!"})
class Shout:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.suffix = ""

    def reconfigure(self, config: dict[str, str]) -> None:
        self.suffix = config["suffix"]

    def __call__(self, text: str) -> str:
        return text.upper() + self.suffix

    def where(self) -> int:
        return self.pid

    def fail(self) -> None:
        raise KeyError("no such word")

    async def letters(self, text: str) -> AsyncIterator[str]:
        for c in text:
            yield c


@serve.deployment
class Greeter:
    def __init__(self, shout: DeploymentHandle) -> None:
        self.shout = shout

    async def __call__(self, name: str) -> str:
        return "hello " + await self.shout.remote(name)


@serve.deployment
def double(x: int) -> int:
    return 2 * x


def test_the_app_runs_in_this_process_with_no_cluster() -> None:
    handle = serve.run(Greeter.bind(Shout.bind()), name="greet", _local_testing_mode=True)
    assert handle.remote("ann").result(timeout_s=5) == "hello ANN!"
    assert serve._session.client is None and serve._session.owned is None, "no cluster"
    shout = DeploymentHandle("Shout", "greet")
    assert shout.where.remote().result(timeout_s=5) == os.getpid()
    assert list(shout.options(stream=True).letters.remote("ab")) == ["a", "b"]
    with pytest.raises(KeyError, match="no such word"):
        shout.fail.remote().result(timeout_s=5)


def test_a_function_and_a_response_passed_on() -> None:
    handle = serve.run(double.bind(), name="fn", _local_testing_mode=True)
    assert handle.remote(handle.remote(3)).result(timeout_s=5) == 12
    serve.delete("fn")
    with pytest.raises(Exception, match="no deployment 'double'"):
        handle.remote(1).result(timeout_s=5)


def test_a_failing_constructor_fails_serve_run() -> None:
    @serve.deployment
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("cannot start")

    with pytest.raises(RuntimeError, match="cannot start"):
        serve.run(Broken.bind(), name="broken", _local_testing_mode=True)


@serve.deployment
class Multiplexed(Inferencer):
    def model_loads(self) -> list[str]:
        # A sync method runs in a thread: the request context follows it there.
        return [*self.loaded, serve.get_multiplexed_model_id()]


def test_a_multiplexed_deployment_gets_its_model_ids() -> None:
    handle = serve.run(Multiplexed.bind(), name="mux", _local_testing_mode=True)
    for model_id in ("a", "a", "b"):
        assert handle.options(multiplexed_model_id=model_id).remote().result(
            timeout_s=5) == f"model {model_id}"
    assert handle.options(multiplexed_model_id="c").model_loads.remote().result(
        timeout_s=5) == ["a", "b", "c"]
