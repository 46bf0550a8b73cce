"""The no-op deployment the HTTP throughput bench deploys: Weir's cost with no user work."""

from __future__ import annotations

from typing import Any

from weir import serve


@serve.deployment
class Noop:
    """Answers every request with "ok" and does nothing else."""

    def __call__(self, request: Any) -> str:
        """Return the constant body; `request` is a starlette Request."""
        return "ok"


# mypy types a decorated class as the bare class (it ignores class decorators).
app = Noop.bind()  # type: ignore[attr-defined]
