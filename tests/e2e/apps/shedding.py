"""A deployment that sheds load quickly: 1 running, 1 queued, 0.3 s per request."""

import time

from starlette.requests import Request

from weir import serve


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1)
class Busy:
    def __call__(self, request: Request) -> str:
        time.sleep(0.3)
        return "done"


app = Busy.bind()
