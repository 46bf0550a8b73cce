"""Request ids: 32 random hex digits, the shape of Ray's (`uuid4().hex`).

Made on every request a client sends without an X-Request-ID, and on every handle call made
outside a request, so they come from the `random` module's generator (seeded from the OS,
reseeded in a forked child) rather than from `os.urandom`: a system call per request, and
one that lets go of the GIL, to wait for it again behind gRPC's poller thread. An id only
has to tell requests apart in logs and traces; nothing trusts it to be unguessable.
"""

from __future__ import annotations

import random


def new_request_id() -> str:
    """A fresh request id: 32 lowercase hex digits."""
    return f"{random.getrandbits(128):032x}"
