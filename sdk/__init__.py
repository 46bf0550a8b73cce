"""Weir: serve Python services and ML models in production with Ray Serve's API.

    from weir import serve

    @serve.deployment(num_replicas=2)
    class Hello:
        def __call__(self, request):
            return "Hello!"

    serve.run(Hello.bind())
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["serve"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `weir.serve` is imported on first use, so that servers importing `weir.<module>`
    # do not pay for the whole SDK.
    if name == "serve":
        return importlib.import_module("weir.serve")
    raise AttributeError(f"module 'weir' has no attribute {name!r}")
