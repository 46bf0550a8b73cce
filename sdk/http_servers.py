"""Which HTTP server the proxy runs: uvicorn (fast, `weir[fast]`) or hypercorn (always
installed). `auto`, the default, takes the fastest one installed.

uvicorn picks httptools (its C HTTP parser) by itself when that is installed, so
`weir[fast]` brings both; with uvicorn alone it parses with h11, still ahead of hypercorn.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection

#: What `--http-server` accepts.
HTTP_SERVER_CHOICES = ("auto", "uvicorn", "hypercorn")

#: Fastest first: the order `auto` tries them in.
BY_SPEED = ("uvicorn", "hypercorn")

#: The extra that installs the fast server (pyproject's [project.optional-dependencies]).
FAST_EXTRA = "pip install 'weir[fast]'"


class HttpServerMissing(ValueError):
    """The HTTP server asked for is not installed; the message says what to install."""


def choose_http_server(requested: str, installed: Collection[str]) -> str:
    """The server to run for `--http-server requested`, given the `installed` ones. Pure.

    Raises HttpServerMissing (one line naming the extra) if `requested` is not installed,
    and ValueError for a name that is no HTTP server of Weir's.
    """
    if requested == "auto":
        for name in BY_SPEED:
            if name in installed:
                return name
        raise HttpServerMissing(f"--http-server auto found no HTTP server installed: "
                                f"{FAST_EXTRA} (or reinstall weir, which brings hypercorn)")
    if requested not in BY_SPEED:
        raise ValueError(f"--http-server must be one of {', '.join(HTTP_SERVER_CHOICES)}; "
                         f"got {requested!r}")
    if requested not in installed:
        extra = FAST_EXTRA if requested == "uvicorn" else "pip install weir"
        raise HttpServerMissing(f"--http-server {requested} needs {requested}, which is not "
                                f"installed: {extra}")
    return requested


def installed_http_servers() -> frozenset[str]:
    """The HTTP servers importable here (found without importing them)."""
    return frozenset(name for name in BY_SPEED if importlib.util.find_spec(name) is not None)


def resolve_http_server(requested: str) -> str:
    """`choose_http_server` over what is installed here."""
    return choose_http_server(requested, installed_http_servers())
