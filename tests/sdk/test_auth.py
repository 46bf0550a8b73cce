"""weir.auth: a server with a token refuses calls without it, before anything of the request
is parsed; Weir's channels carry the token on every kind of call; where the token comes from.

Everything is real gRPC on loopback in this process: a grpc.aio server made by
`weir.auth.server` whose handlers count their calls and whose request parser counts what
it parsed, called through `weir.auth.channel` / `sync_channel` or plain channels.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from weir import auth
from weir.cli.cluster_state import STATE_FILE_NAME, ClusterInfo

TOKEN = "s3cret-token"
SERVICE = "weir.test.Echo"


class Echo:
    """Four methods, one of each kind, over raw bytes; counts handler runs and parses."""

    def __init__(self) -> None:
        self.handled = 0
        self.parsed = 0

    def parse(self, data: bytes) -> bytes:
        # Stands for unpickling: a refused call must never get here.
        self.parsed += 1
        return data

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.handled += 1
        return request

    async def server_stream(self, request: bytes,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self.handled += 1
        for _ in range(3):
            yield request

    async def client_stream(self, requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext) -> bytes:
        self.handled += 1
        return b"".join([r async for r in requests])

    async def bidi(self, requests: AsyncIterator[bytes],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self.handled += 1
        async for request in requests:
            yield request

    def handler(self) -> grpc.GenericRpcHandler:
        kw: dict[str, Any] = {"request_deserializer": self.parse}
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, **kw),
        })


def with_server(server_token: str, use: Callable[[str, Echo], Awaitable[Any]]) -> Any:
    """Run `use(address, echo)` against a server made by weir.auth.server(token=...)."""

    async def main() -> Any:
        echo = Echo()
        server = auth.server(token=server_token)
        server.add_generic_rpc_handlers((echo.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await use(f"127.0.0.1:{port}", echo)
        finally:
            await server.stop(None)

    return asyncio.run(main())


async def call_all(channel: grpc.aio.Channel) -> list[Any]:
    """One call of each kind; each result is the answer or the status code it failed with."""
    m = f"/{SERVICE}/"

    async def outcome(call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    async def requests() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async def server_stream() -> list[bytes]:
        return [r async for r in channel.unary_stream(m + "ServerStream")(b"x")]

    async def bidi() -> list[bytes]:
        call = channel.stream_stream(m + "Bidi")()
        await call.write(b"p")
        await call.write(b"q")
        await call.done_writing()
        return [r async for r in call]

    return [await outcome(lambda: channel.unary_unary(m + "Unary")(b"x")),
            await outcome(server_stream),
            await outcome(lambda: channel.stream_unary(m + "ClientStream")(requests())),
            await outcome(bidi)]


async def refusal_codes(channel: grpc.aio.Channel) -> list[grpc.StatusCode]:
    """One call of each kind that sends no stream message, and the status each ends with.

    A refused call ends at once without reading; a client writing meanwhile may see the
    race as INTERNAL ("Internal error from Core"), so the refusal is read before any write.
    """
    m = f"/{SERVICE}/"
    calls = [channel.unary_unary(m + "Unary")(b"x"),
             channel.unary_stream(m + "ServerStream")(b"x"),
             channel.stream_unary(m + "ClientStream")(),
             channel.stream_stream(m + "Bidi")()]
    codes = [await asyncio.wait_for(call.code(), 5) for call in calls]
    for call in calls:
        call.cancel()
    return codes


ANSWERS = [b"x", [b"x", b"x", b"x"], b"ab", [b"p", b"q"]]
REFUSED = [grpc.StatusCode.UNAUTHENTICATED] * 4


@pytest.mark.parametrize("client_token", [None, "", "wrong-token", TOKEN[:-1], TOKEN + "x"])
def test_a_call_without_the_right_token_is_refused_before_its_handler_runs(
        client_token: str | None) -> None:
    async def use(address: str, echo: Echo) -> tuple[list[Any], int, int]:
        if client_token is None:
            channel = grpc.aio.insecure_channel(address)  # a stranger's plain channel
        else:
            channel = auth.channel(address, token=client_token)
        async with channel:
            return await refusal_codes(channel), echo.handled, echo.parsed

    results, handled, parsed = with_server(TOKEN, use)
    assert results == REFUSED
    assert (handled, parsed) == (0, 0)


def test_a_channel_with_the_token_gets_through_on_every_kind_of_call() -> None:
    async def use(address: str, echo: Echo) -> tuple[list[Any], int]:
        async with auth.channel(address, token=TOKEN) as channel:
            return await call_all(channel), echo.handled

    assert with_server(TOKEN, use) == (ANSWERS, 4)


def test_a_channel_with_the_token_is_a_whole_channel() -> None:
    async def use(address: str, echo: Echo) -> list[Any]:
        channel = auth.channel(address, token=TOKEN)
        assert isinstance(channel, grpc.aio.Channel)
        await asyncio.wait_for(channel.channel_ready(), 5)
        state = channel.get_state()
        # Metadata of the caller's own travels beside the token.
        reply = await channel.unary_unary(f"/{SERVICE}/Unary")(
            b"x", metadata=(("request-id", "r1"),), timeout=5)
        await channel.close()
        return [state, reply, channel.get_state()]

    assert with_server(TOKEN, use) == [grpc.ChannelConnectivity.READY, b"x",
                                       grpc.ChannelConnectivity.SHUTDOWN]


def test_the_refusal_names_the_fix_and_is_logged_with_peer_and_method() -> None:
    async def use(address: str, echo: Echo) -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(f"/{SERVICE}/Unary")(b"x")
            return info.value

    with capture_logs() as logs:
        error = with_server(TOKEN, use)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing or wrong cluster token" in (error.details() or "")
    assert "WEIR_TOKEN" in (error.details() or "")
    refusals = [e for e in logs if e["event"] == "refused a call without the cluster token"]
    assert len(refusals) == 1
    assert refusals[0]["method"] == f"/{SERVICE}/Unary"
    assert refusals[0]["peer"].startswith("ipv4:127.0.0.1:")
    assert refusals[0]["token"] == "missing"
    assert refusals[0]["log_level"] == "warning"


def test_a_server_without_a_token_checks_nothing() -> None:
    async def use(address: str, echo: Echo) -> list[Any]:
        async with grpc.aio.insecure_channel(address) as plain:
            first = await call_all(plain)
        async with auth.channel(address, token="any") as tokened:
            return [first, await call_all(tokened)]

    assert with_server("", use) == [ANSWERS, ANSWERS]


def test_a_sync_channel_carries_the_token() -> None:
    def blocking(address: str, token: str) -> Any:
        with auth.sync_channel(address, token=token) as channel:
            try:
                return channel.unary_unary(f"/{SERVICE}/Unary")(b"sync", timeout=5)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[attr-defined]

    async def use(address: str, echo: Echo) -> list[Any]:
        # The blocking calls run on a thread: the server's loop must keep serving.
        return [await asyncio.to_thread(blocking, address, token)
                for token in (TOKEN, "wrong", "")]

    assert with_server(TOKEN, use) == [b"sync", grpc.StatusCode.UNAUTHENTICATED,
                                       grpc.StatusCode.UNAUTHENTICATED]


def test_token_check_refuses_to_be_built_without_a_token() -> None:
    with pytest.raises(ValueError, match="non-empty token"):
        auth.TokenCheck("")


@pytest.fixture
def weir_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("WEIR_HOME", str(tmp_path))
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    yield tmp_path


def save_state(home: Path, token: str) -> Path:
    """A state file naming this test process as a controller, so that it counts as running."""
    path = home / STATE_FILE_NAME
    ClusterInfo("c1", "", ["127.0.0.1:1"], "", str(home),
                {"controller-0": os.getpid()}, token=token).save(path)
    return path


def test_cluster_token_comes_from_the_flag_then_env_then_state_file(
        weir_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert auth.cluster_token() == ""
    path = save_state(weir_home, "from-file")
    assert path.stat().st_mode & 0o777 == 0o600  # it holds a secret
    assert auth.cluster_token() == "from-file"
    monkeypatch.setenv(auth.TOKEN_ENV, "from-env")
    assert auth.cluster_token() == "from-env"
    assert auth.cluster_token("from-flag") == "from-flag"
    # Set but empty is an answer (a process Weir started without a token), not a gap.
    monkeypatch.setenv(auth.TOKEN_ENV, "")
    assert auth.cluster_token() == ""
    assert auth.cluster_token("") == ""


def test_a_dead_clusters_state_file_gives_no_token(weir_home: Path) -> None:
    path = weir_home / STATE_FILE_NAME
    ClusterInfo("c1", "", ["127.0.0.1:1"], "", str(weir_home), {"controller-0": 0},
                token="stale").save(path)
    assert auth.cluster_token() == ""


def test_pin_token_puts_the_resolved_token_in_the_environment(
        weir_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_state(weir_home, "from-file")
    assert auth.pin_token() == "from-file"
    assert os.environ[auth.TOKEN_ENV] == "from-file"
    monkeypatch.delenv(auth.TOKEN_ENV)


def test_new_tokens_are_long_and_distinct() -> None:
    tokens = {auth.new_token() for _ in range(10)}
    assert len(tokens) == 10
    assert all(len(t) >= 40 for t in tokens)


def test_the_health_service_answers_without_the_token_and_nothing_else_does() -> None:
    """Kubernetes' gRPC probes send no metadata, and the health service runs no user code."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from weir.grpc_health import serve_health

    async def main() -> list[Any]:
        server = auth.server(token=TOKEN)
        server.add_generic_rpc_handlers((Echo().handler(),))
        await serve_health(server, ["weir.Replica"])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
                health = health_pb2_grpc.HealthStub(plain)
                reply = await health.Check(health_pb2.HealthCheckRequest(service="weir.Replica"),
                                           timeout=5)
                return [reply.status, await refusal_codes(plain)]
        finally:
            await server.stop(None)

    assert asyncio.run(main()) == [health_pb2.HealthCheckResponse.SERVING, REFUSED]
