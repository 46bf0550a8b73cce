"""Import paths (`package.module:attribute`): how code is named in configs and resolved."""

from __future__ import annotations

import importlib
from typing import Any


def import_attr(import_path: str) -> Any:
    """Import `package.module:attr` (or `package.module.attr`) and return the attribute."""
    if ":" in import_path:
        module_name, _, attr = import_path.partition(":")
    else:
        module_name, _, attr = import_path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"import path {import_path!r} must look like 'module.sub:attribute'")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target
