"""Ray's user_config with reconfigure(user_config, rank), the replica context, and a
custom health check."""

import os

import requests

from weir import serve
from weir.serve.handle import DeploymentHandle

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


@serve.deployment(num_replicas=2, user_config={"threshold": 0.5},
                  health_check_period_s=1, health_check_timeout_s=5)
class Model:
    def __init__(self) -> None:
        context = serve.get_replica_context()
        self.deployment = context.deployment
        self.threshold = 0.0
        self.rank = -1

    def reconfigure(self, user_config: dict, rank) -> None:
        self.threshold = user_config["threshold"]
        self.rank = rank.rank

    def check_health(self) -> None:
        if self.threshold < 0:
            raise RuntimeError("bad threshold")

    def __call__(self) -> dict:
        context = serve.get_replica_context()
        assert context.servable_object is self
        return {"threshold": self.threshold, "deployment": self.deployment,
                "app": context.app_name, "rank": self.rank, "context_rank": context.rank.rank,
                "world_size": context.world_size, "replica": context.replica_tag}


handle: DeploymentHandle = serve.run(Model.bind(), name="configured",
                                     route_prefix="/configured")
seen = {}
for _ in range(40):
    reply = handle.remote().result()
    seen[reply["replica"]] = reply
    if len(seen) == 2:
        break
assert len(seen) == 2, seen
assert sorted(r["rank"] for r in seen.values()) == [0, 1], seen
for reply in seen.values():
    assert reply["threshold"] == 0.5 and reply["world_size"] == 2
    assert reply["deployment"] == "Model" and reply["app"] == "configured"
    assert reply["rank"] == reply["context_rank"]
assert requests.get(f"{URL}/configured").json()["threshold"] == 0.5
try:
    serve.get_replica_context()
except serve.RayServeException:
    pass
else:
    raise AssertionError("get_replica_context() outside a replica must raise")
print("ok")
