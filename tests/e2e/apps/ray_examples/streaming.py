"""Ray's streaming: a StreamingResponse over HTTP and a generator through a handle, read
with `for` and with next()."""

import os
from collections.abc import Iterator

import requests
from starlette.requests import Request
from starlette.responses import StreamingResponse

from weir import serve
from weir.serve.handle import DeploymentHandle, DeploymentResponseGenerator

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


@serve.deployment
class Streamer:
    def generate_numbers(self, max: int) -> Iterator[str]:
        for i in range(max):
            yield str(i)

    def __call__(self, request: Request) -> StreamingResponse:
        max = int(request.query_params.get("max", "5"))
        return StreamingResponse(self.generate_numbers(max), media_type="text/plain")


handle: DeploymentHandle = serve.run(Streamer.bind(), name="streaming",
                                     route_prefix="/streaming")
with requests.get(f"{URL}/streaming", params={"max": 4}, stream=True) as r:
    assert "".join(chunk.decode() for chunk in r.iter_content(chunk_size=None)) == "0123"

gen: DeploymentResponseGenerator = handle.options(
    stream=True, method_name="generate_numbers").remote(3)
assert next(gen) == "0"
assert list(gen) == ["1", "2"]
assert [x for x in handle.options(stream=True).generate_numbers.remote(2)] == ["0", "1"]
print("ok")
