"""WebSockets through the proxy to an @serve.ingress app: messages both ways, close codes
passed through in both directions, a refused handshake."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.e2e.conftest import RunningCluster, start_cluster, wait_for


class Client:
    """A minimal blocking WebSocket client (wsproto over a socket)."""

    def __init__(self, url: str, path: str) -> None:
        where = urlparse(url)
        self.sock = socket.create_connection((where.hostname, where.port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []
        self.sock.sendall(self.ws.send(Request(host=where.netloc, target=path)))
        self.handshake = self.next_event()

    def next_event(self) -> Event:
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def receive(self) -> Event:
        return self.next_event()

    def close(self, code: int) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(code=code)))

    def shut(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    # On uvicorn: hypercorn (0.18) tells the app 1000 or 1006 whatever code the client
    # closed with, so a client's close code cannot pass through it.
    yield from start_cluster(tmp_path_factory, http_server="uvicorn")


@pytest.fixture(scope="module")
def chat(cluster: RunningCluster) -> Iterator[RunningCluster]:
    cluster.deploy_app("chat", "tests.e2e.apps.websockets_app:deployment")
    cluster.wait_status("chat", "RUNNING")
    yield cluster


def test_messages_go_both_ways_and_the_apps_close_code_reaches_the_client(
        chat: RunningCluster) -> None:
    client = Client(chat.url, "/chat/ws")
    try:
        assert isinstance(client.handshake, AcceptConnection)
        assert any(k.lower() == b"x-request-id" for k, _ in client.handshake.extra_headers)
        for text in ("hello", "again"):
            client.send(text)
            reply = client.receive()
            assert isinstance(reply, TextMessage) and reply.data == f"echo: {text}"
        client.send("bye")
        closing = client.receive()
        assert isinstance(closing, CloseConnection)
        assert (closing.code, closing.reason) == (4001, "asked to leave")
    finally:
        client.shut()


def test_the_clients_close_code_reaches_the_app(chat: RunningCluster) -> None:
    client = Client(chat.url, "/chat/ws")
    try:
        assert isinstance(client.handshake, AcceptConnection)
        client.send("hi")
        assert isinstance(client.receive(), TextMessage)
        client.close(4321)
        assert isinstance(client.receive(), CloseConnection)  # the server's answer
    finally:
        client.shut()
    wait_for(lambda: 4321 in chat.get("/chat/closes").json(), 10,
             "the app to see 4321")


def test_an_app_that_closes_before_accepting_refuses_the_handshake(
        chat: RunningCluster) -> None:
    client = Client(chat.url, "/chat/refuse")
    try:
        assert isinstance(client.handshake, RejectConnection)
        assert client.handshake.status_code == 403
    finally:
        client.shut()


def test_websockets_are_served_under_http_options_root_path(chat: RunningCluster) -> None:
    """Ray's http_options.root_path holds for WebSockets too: /gw/chat/ws reaches the app,
    /chat/ws no longer does."""
    chat.set_root_path("/gw")
    try:
        wait_for(lambda: chat.get("/gw/chat/closes").status_code == 200, 15,
                 "the proxy to serve under /gw")
        client = Client(chat.url, "/gw/chat/ws")
        try:
            assert isinstance(client.handshake, AcceptConnection)
            client.send("rooted")
            reply = client.receive()
            assert isinstance(reply, TextMessage) and reply.data == "echo: rooted"
        finally:
            client.shut()
        outside = Client(chat.url, "/chat/ws")
        try:
            assert not isinstance(outside.handshake, AcceptConnection)
        finally:
            outside.shut()
    finally:
        chat.set_root_path("")
        wait_for(lambda: chat.get("/chat/closes").status_code == 200, 15,
                 "the proxy to serve at / again")
