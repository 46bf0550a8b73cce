"""Ray Serve's "Key concepts" page as it writes it: a deployment bound with an argument,
and an application composed of three deployments through handles (two calls in flight,
then both awaited). Its FastAPI ingress is fastapi_composition.py's subject."""

import os

import requests

from weir import serve
from weir.serve.handle import DeploymentHandle

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


@serve.deployment
class MyFirstDeployment:
    # Take the message to return as an argument to the constructor.
    def __init__(self, msg):
        self.msg = msg

    def __call__(self):
        return self.msg


my_first_deployment = MyFirstDeployment.bind("Hello world!")
handle: DeploymentHandle = serve.run(my_first_deployment, name="first",
                                     route_prefix="/first")
assert handle.remote().result() == "Hello world!"


@serve.deployment
class Hello:
    def __call__(self) -> str:
        return "Hello"


@serve.deployment
class World:
    def __call__(self) -> str:
        return " world!"


@serve.deployment
class Ingress:
    def __init__(self, hello_handle: DeploymentHandle, world_handle: DeploymentHandle):
        self._hello_handle = hello_handle
        self._world_handle = world_handle

    async def __call__(self) -> str:
        hello_response = self._hello_handle.remote()
        world_response = self._world_handle.remote()
        return (await hello_response) + (await world_response)


hello = Hello.bind()
world = World.bind()
app = Ingress.bind(hello, world)
handle = serve.run(app, name="composed", route_prefix="/composed")
assert handle.remote().result() == "Hello world!"
assert requests.get(f"{URL}/composed").text == "Hello world!"

print("ok")
