"""Ray Serve's production guide and "Configure Ray Serve deployments" page: options set in
the decorator and overridden with `.options()`, then `serve.status()` read as the guide
reads `serve status`, and `serve.delete`."""

import os

import requests

from weir import serve
from weir.serve.schema import ApplicationStatus, DeploymentStatus

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")


# Every parameter "Configure Ray Serve deployments" shows, as it shows them.
@serve.deployment(
    name="Model",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.1, "num_gpus": 0},
    max_ongoing_requests=100,
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=20,
    graceful_shutdown_wait_loop_s=2,
)
class Model:
    def __init__(self, model_name: str):
        self.model_name = model_name

    def __call__(self) -> str:
        return self.model_name


app = Model.options(num_replicas=2).bind("fruit-v1")
serve.run(app, name="fruit", route_prefix="/fruit")
assert requests.get(f"{URL}/fruit").text == "fruit-v1"

status = serve.status()
fruit = status.applications["fruit"]
assert fruit.status == ApplicationStatus.RUNNING and fruit.status == "RUNNING"
assert fruit.message == ""
assert fruit.last_deployed_time_s > 0
model = fruit.deployments["Model"]
assert model.status == DeploymentStatus.HEALTHY
assert model.status_trigger == "CONFIG_UPDATE_COMPLETED"
assert model.replica_states == {"RUNNING": 2}

serve.delete("fruit")
assert "fruit" not in serve.status().applications
print("ok")
