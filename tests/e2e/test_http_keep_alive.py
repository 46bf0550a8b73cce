"""http_options.keep_alive_timeout_s (issue 14, gap 12): the proxy closes an idle HTTP
connection after the cluster's keep-alive, set by serve.start, not its 5 s default."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import RunningCluster, driver_connected, wait_for
from weir import serve


@pytest.fixture(scope="module")
def driver(cluster: RunningCluster) -> Iterator[RunningCluster]:
    with driver_connected(cluster):
        yield cluster


def idle_seconds_until_closed(address: str) -> float | None:
    """One keep-alive request, then how long the idle connection lasts (None: > 3 s)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        sock.sendall(b"GET /none HTTP/1.1\r\nHost: weir\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        answered = time.monotonic()
        try:
            while sock.recv(4096):
                pass  # the rest of the 404's body
        except TimeoutError:
            return None
        return time.monotonic() - answered


def test_keep_alive_follows_http_options(driver: RunningCluster) -> None:
    address = driver.info.http
    serve.start(http_options={"keep_alive_timeout_s": 1.0,
                              "host": address.rsplit(":", 1)[0],
                              "port": int(address.rsplit(":", 1)[1])})
    idle = wait_for(lambda: idle_seconds_until_closed(address), 15,
                    "the proxy to close an idle connection within 3 s")
    assert 0.5 < idle < 2.5
