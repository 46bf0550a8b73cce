"""Ray's model multiplexing: a multiplexed deployment whose models load on demand (a stand-in
for torch.load from a bucket), called over HTTP with the serve_multiplexed_model_id header
and through a handle with multiplexed_model_id. (Ray's page goes on to an upstream
deployment setting the model of a downstream one: the same handle option, from a replica;
left out to keep the suite short.)"""

import asyncio
import os

import requests
import starlette.requests

from weir import serve

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


class Model:
    """What torch.load would give: a model whose forward() answers with its id."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def forward(self, data: str) -> str:
        return f"model {self.model_id} on {data}"


@serve.deployment
class ModelInferencer:
    def __init__(self):
        self.bucket_name = "my_bucket"

    @serve.multiplexed(max_num_models_per_replica=3)
    async def get_model(self, model_id: str):
        await asyncio.sleep(0.01)  # downloading s3://my_bucket/{model_id}/model.pt
        return Model(model_id)

    async def __call__(self, request: starlette.requests.Request):
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id)
        return model.forward("input")


entry = ModelInferencer.bind()
handle = serve.run(entry, name="multiplexing", route_prefix="/multiplexing")

resp = requests.get(f"{URL}/multiplexing", headers={"serve_multiplexed_model_id": "1"})
assert resp.text == "model 1 on input", resp.text

obj_ref = handle.options(multiplexed_model_id="2").remote("<your param>")
assert obj_ref.result() == "model 2 on input"

print("ok")
