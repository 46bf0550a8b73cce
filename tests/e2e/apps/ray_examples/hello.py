"""Ray's getting-started shapes: a function deployment and a class whose __call__ takes no
request, called over HTTP and through the handle serve.run returns."""

import os

import requests

from weir import serve
from weir.serve.handle import DeploymentHandle

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


@serve.deployment
def hello() -> str:
    return "Hello, world!"


@serve.deployment
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> dict[str, int]:
        self.count += 1
        return {"count": self.count}


handle: DeploymentHandle = serve.run(hello.bind(), name="hello", route_prefix="/hello")
assert requests.get(f"{URL}/hello").text == "Hello, world!"
assert handle.remote().result() == "Hello, world!"

counter: DeploymentHandle = serve.run(Counter.bind(), name="counter", route_prefix="/counter")
assert requests.get(f"{URL}/counter").json() == {"count": 1}
assert counter.remote().result() == {"count": 2}
print("ok")
