"""The composed application of the composition bench: an ingress that makes one handle call
to the no-op deployment of `bench.noop_app`, so both systems do the same no-op work."""

from __future__ import annotations

from typing import Any

from bench.noop_app import Noop
from weir import serve
from weir.handle import DeploymentHandle


@serve.deployment
class Forward:
    """Answers with whatever one call to the deployment behind it returns."""

    def __init__(self, inner: DeploymentHandle) -> None:
        self.inner = inner

    async def __call__(self, request: Any) -> str:
        """One handle call (the hop under measure); `request` is a starlette Request."""
        return await self.inner.remote(None)  # type: ignore[no-any-return]


# mypy types a decorated class as the bare class (it ignores class decorators).
app = Forward.bind(Noop.bind())  # type: ignore[attr-defined]
