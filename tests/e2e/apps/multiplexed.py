"""A multiplexed deployment for the multiplexing tests: each answer says which replica
served it, for which model, and which models that replica's `__del__` calls released."""

from typing import Any

from weir import serve


class Model:
    def __init__(self, model_id: str, released: list[str]) -> None:
        self.model_id = model_id
        self.released = released

    def __del__(self) -> None:
        self.released.append(self.model_id)


@serve.deployment(num_replicas=2)
class Multiplexed:
    def __init__(self) -> None:
        self.released: list[str] = []

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> Model:
        return Model(model_id, self.released)

    async def __call__(self, *request: Any) -> dict[str, Any]:
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"replica": serve.get_replica_context().replica_id, "model": model.model_id,
                "released": list(self.released)}


app = Multiplexed.bind()
