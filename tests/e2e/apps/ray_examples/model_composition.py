"""Ray Serve's "Deploy Compositions of Models" page as it writes it: calling other methods
of a deployment by attribute and with `options(method_name=...)`, and streaming through a
handle (`options(stream=True)`) inside a deployment and from the driver. Chaining a
DeploymentResponse into another call is fastapi_composition.py's subject."""

from collections.abc import AsyncGenerator, Generator

from weir import serve
from weir.serve.handle import DeploymentHandle


@serve.deployment
class Greeter:
    def greet(self, name: str) -> str:
        return f"Hello {name}!"

    def goodbye(self, name: str) -> str:
        return f"Goodbye {name}!"


greeter: DeploymentHandle = serve.run(Greeter.bind(), name="greeter", route_prefix="/greeter")
assert greeter.greet.remote("Ray").result() == "Hello Ray!"
assert greeter.options(method_name="goodbye").remote("Ray").result() == "Goodbye Ray!"


@serve.deployment
class Streamer:
    def __call__(self, limit: int) -> Generator[int, None, None]:
        yield from range(limit)


@serve.deployment
class Caller:
    def __init__(self, streamer: DeploymentHandle):
        self._streamer = streamer.options(stream=True)

    async def __call__(self, limit: int) -> AsyncGenerator[int, None]:
        async for i in self._streamer.remote(limit):
            yield i * 10


caller: DeploymentHandle = serve.run(Caller.bind(Streamer.bind()), name="stream",
                                     route_prefix="/stream")
assert list(caller.options(stream=True).remote(4)) == [0, 10, 20, 30]
print("ok")
