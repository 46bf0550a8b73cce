"""Request ids as Ray gives them: the client's X-Request-ID is kept and echoed, one is made
otherwise, and the replicas along the way read it from the request context."""

import os

import requests

from weir import serve
from weir.serve.context import _get_serve_request_context
from weir.serve.handle import DeploymentHandle

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


@serve.deployment
class Downstream:
    def __call__(self) -> str:
        return _get_serve_request_context().request_id


@serve.deployment
class Upstream:
    def __init__(self, downstream: DeploymentHandle) -> None:
        self.downstream = downstream

    async def __call__(self) -> dict:
        response = self.downstream.remote()
        return {"here": _get_serve_request_context().request_id,
                "downstream": await response, "response_id": response.request_id}


handle: DeploymentHandle = serve.run(Upstream.bind(Downstream.bind()), name="ids",
                                     route_prefix="/ids")
r = requests.get(f"{URL}/ids", headers={"X-Request-ID": "my-request-42"})
assert r.headers["x-request-id"] == "my-request-42"
assert r.json() == {"here": "my-request-42", "downstream": "my-request-42",
                    "response_id": "my-request-42"}, r.json()
r = requests.get(f"{URL}/ids")
made = r.headers["x-request-id"]
assert made and r.json()["here"] == made and r.json()["downstream"] == made
response = handle.remote()
assert response.result()["here"] == response.request_id
print("ok")
