"""One request at a time, no queue: the proxy sheds everything else. Each call the replica
gets appends a line to the file `?log=` names, so a test can tell which calls reached it."""

import time
from pathlib import Path

from starlette.requests import Request

from weir import serve


@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Single:
    def __call__(self, request: Request) -> str:  # sync: runs in the replica's thread pool
        with open(Path(request.query_params["log"]), "a") as log:
            log.write("call\n")
        time.sleep(float(request.query_params.get("s", "0")))
        return "done"


app = Single.bind()
