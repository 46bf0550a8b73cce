"""The no-op application of `bench/noop_app.py`, written for Ray Serve.

Runs only in the side venv that has `ray[serve]` (bench/README.md says how to make it):
`serve run` imports it there as `bench.ray_noop_app:app`. Weir's own venv never imports it.
"""

from __future__ import annotations

from typing import Any

from ray import serve


@serve.deployment
class Noop:
    """Answers every request with "ok" and does nothing else, as Weir's `Noop` does."""

    def __call__(self, request: Any) -> str:
        """Return the constant body; `request` is a starlette Request."""
        return "ok"


app = Noop.bind()
