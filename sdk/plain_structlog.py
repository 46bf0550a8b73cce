"""Import structlog without rich: a Weir process imports this module before anything else.

Why. `import structlog` imports `structlog.dev`, which imports rich when it is installed, to
offer pretty tracebacks: ~10 MB resident and 60-80 ms of import in every process, for a
feature Weir's processes never use (their log chain formats exceptions with
`format_exc_info` before the renderer, so a traceback prints the same plain way with or
without rich). Marking rich as missing only while structlog is imported makes structlog
pick its plain formatter; rich stays importable afterwards, so user code in a replica that
imports it gets it as usual. The only difference a user can see: a replica's own
`structlog.dev.ConsoleRenderer()` defaults to plain tracebacks, not rich ones.

Importing this module after structlog changes nothing (structlog has made its choice).
"""

from __future__ import annotations

import sys


def import_structlog_without_rich() -> None:
    """Import structlog with rich hidden, unless structlog is imported already."""
    if "structlog" in sys.modules:
        return
    missing = object()
    saved = sys.modules.get("rich", missing)
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        if saved is missing:
            del sys.modules["rich"]
        else:
            sys.modules["rich"] = saved  # type: ignore[assignment]


import_structlog_without_rich()
