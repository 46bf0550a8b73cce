"""The smallest Weir app: `weir run examples.hello:app`, then `curl localhost:8000/`."""

from starlette.requests import Request

from weir import serve


# Each replica reserves half a CPU of its node (Ray's default is one), so both fit on a
# one-core machine too.
@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5})
class Hello:
    """Answers every request with a greeting and the replica's process id."""

    def __init__(self, greeting: str = "Hello") -> None:
        import os

        self.greeting = greeting
        self.pid = os.getpid()

    def __call__(self, request: Request) -> dict[str, object]:
        name = request.query_params.get("name", "world")
        return {"message": f"{self.greeting}, {name}!", "pid": self.pid}


app = Hello.bind()
