"""The app the high-availability chaos tests (tests/e2e/test_ha.py) run under load."""

import asyncio
import os

from starlette.requests import Request

from weir import serve


@serve.deployment(num_replicas=2, max_ongoing_requests=8, health_check_period_s=0.5,
                  health_check_timeout_s=2.0, graceful_shutdown_timeout_s=5.0)
class Steady:
    """Answers with its PID after `?s=` seconds (10 ms by default). `/sick` makes its
    check_health fail from then on, `/hang` makes it never return (the replica's loop and
    session alive meanwhile)."""

    def __init__(self) -> None:
        self.sick = False
        self.hung = False

    async def __call__(self, request: Request) -> dict[str, object]:
        if request.url.path.endswith("/sick"):
            self.sick = True
            return {"pid": os.getpid(), "sick": True}
        if request.url.path.endswith("/hang"):
            self.hung = True
            return {"pid": os.getpid(), "hung": True}
        await asyncio.sleep(float(request.query_params.get("s", "0.01")))
        return {"pid": os.getpid()}

    async def check_health(self) -> None:
        if self.sick:
            raise RuntimeError("told to be sick by /sick")
        if self.hung:
            await asyncio.Event().wait()


app = Steady.bind()
