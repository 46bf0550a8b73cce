"""Which of a deployment's methods a call reaches: one rule for replicas and for the
in-process local testing mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def user_method(instance: Any, is_function: bool, name: str) -> Callable[..., Any]:
    """The callable a call naming `name` runs (`""` is `__call__`). A function deployment
    has only `__call__`; private methods are never reachable. AttributeError otherwise."""
    if is_function:
        if name not in ("", "__call__"):
            raise AttributeError(f"function deployments have only __call__, not {name!r}")
        return instance  # type: ignore[no-any-return]
    attr = name or "__call__"
    if attr.startswith("_") and attr != "__call__":
        raise AttributeError(f"method {attr!r} is private")
    try:
        return getattr(instance, attr)  # type: ignore[no-any-return]
    except AttributeError:
        raise AttributeError(
            f"deployment class {type(instance).__name__} has no method {attr!r}") from None
