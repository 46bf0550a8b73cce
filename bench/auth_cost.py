"""What the cluster token costs per call: unary gRPC calls to an in-process grpc.aio server,
with and without `weir.auth`'s token check, in the same run.

Setups (each round a fresh server and channel):

- `no token`: `weir.auth.server` / `weir.auth.channel` with no token: no interceptor, a
  plain channel (a single host on loopback, the default);
- `token`: the same with a token, as Weir's processes make them: the server's TokenCheck
  interceptor, the channel adding the token to each call;
- `token, aio client interceptor`: the server's check, the token added by a grpc.aio client
  interceptor instead (the alternative weir.auth.channel rejects, measured here);
- `token sent, not checked`: the channel adds the token, the server has no interceptor:
  what carrying one more metadata pair costs;
- `pass-through interceptor`: a server interceptor that checks nothing, no token: what
  grpc.aio's server interceptor machinery costs by itself.

Client and server share one event loop, so a call's time is all the CPU it costs on both
sides. The process's CPU time (every thread, gRPC's own included) is counted as well as
wall time: it hardly moves when other processes load the machine. The setups take turns
for `--rounds` rounds of `--calls` sequential calls each, so drift in the machine's load
hits them alike; the table gives the median round and the difference from `no token`, then
the best round of each (load only ever adds time). `--stream` adds the CPU cost of one
message on a long-lived bidi stream (Weir's multiplexed proxy -> replica path), where the
token is checked once per stream, not per message. Last, the check alone
(`TokenCheck.intercept_service` on a call's details, no gRPC) is timed, to tell its cost
from gRPC's cost of carrying one more metadata pair.

    python -m bench.auth_cost --stream            # ~30 s
    python -m bench.auth_cost --calls 2000 --rounds 9 --loop asyncio
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import grpc

from weir import auth

SERVICE = "bench.AuthCost"
TOKEN = auth.new_token()
PAYLOAD = b"x" * 64


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _echo_stream(requests: AsyncIterator[bytes],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


class PassThrough(grpc.aio.ServerInterceptor):
    """A server interceptor that lets every call through unexamined."""

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        return await continuation(handler_call_details)


class _AddToken:
    def _details(self, details: Any) -> Any:
        return details._replace(metadata=grpc.aio.Metadata(
            *(details.metadata or ()), (auth.TOKEN_METADATA_KEY, TOKEN)))


class UnaryToken(_AddToken, grpc.aio.UnaryUnaryClientInterceptor):
    """The token added by a grpc.aio client interceptor, unary calls."""

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class StreamToken(_AddToken, grpc.aio.StreamStreamClientInterceptor):
    """The token added by a grpc.aio client interceptor, bidi calls."""

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


@dataclass
class Setup:
    """One way of calling: the server's interceptors and the client's channel."""

    name: str
    make_server: Callable[[], grpc.aio.Server]
    make_channel: Callable[[str], grpc.aio.Channel]
    #: Per round: (CPU µs, wall µs) per call, and per stream message.
    rounds: list[tuple[float, float]] = field(default_factory=list)
    stream_rounds: list[tuple[float, float]] = field(default_factory=list)


SETUPS = [
    Setup("no token", lambda: auth.server(token=""),
          lambda address: auth.channel(address, token="")),
    Setup("token", lambda: auth.server(token=TOKEN),
          lambda address: auth.channel(address, token=TOKEN)),
    Setup("token, aio client interceptor", lambda: auth.server(token=TOKEN),
          lambda address: grpc.aio.insecure_channel(
              address, interceptors=[UnaryToken(), StreamToken()])),
    Setup("token sent, not checked", lambda: auth.server(token=""),
          lambda address: auth.channel(address, token=TOKEN)),
    Setup("pass-through interceptor", lambda: grpc.aio.server(interceptors=[PassThrough()]),
          lambda address: auth.channel(address, token="")),
]


async def _timed(calls: int, one: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(CPU µs, wall µs) per call over `calls` sequential calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await one()
    return ((time.process_time() - cpu) / calls * 1e6,
            (time.perf_counter() - wall) / calls * 1e6)


async def measure(setup: Setup, calls: int, stream: bool) -> None:
    """One round of `setup`: a fresh server and channel, a warm-up, then `calls` calls."""
    server = setup.make_server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "EchoStream": grpc.stream_stream_rpc_method_handler(_echo_stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with setup.make_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(f"/{SERVICE}/Echo")

            def one() -> Awaitable[object]:
                return echo(PAYLOAD)  # type: ignore[no-any-return]

            await _timed(max(50, calls // 10), one)
            setup.rounds.append(await _timed(calls, one))
            if stream:
                call = channel.stream_stream(f"/{SERVICE}/EchoStream")()

                async def message() -> object:
                    await call.write(PAYLOAD)
                    return await call.read()

                await _timed(max(50, calls // 10), message)
                setup.stream_rounds.append(await _timed(calls, message))
                call.cancel()
    finally:
        await server.stop(None)


def _median(rounds: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))


def table(setups: list[Setup], stream: bool) -> str:
    """The results as a text table: the median round's µs per call (CPU, wall) and each
    setup's difference from the first; then each setup's best round (CPU)."""
    cpu0, wall0 = _median(setups[0].rounds)
    best0 = min(r[0] for r in setups[0].rounds)
    head = (f"{'setup':<31}{'CPU µs/call':>12}{'diff':>8}{'diff %':>8}"
            f"{'wall µs/call':>13}{'diff':>8}{'best CPU':>10}{'diff':>8}")
    if stream:
        head += f"{'CPU µs/stream msg':>19}{'diff':>7}"
    lines = [head, "-" * len(head)]
    for s in setups:
        cpu, wall = _median(s.rounds)
        best = min(r[0] for r in s.rounds)
        line = (f"{s.name:<31}{cpu:>12.1f}{cpu - cpu0:>+8.1f}{(cpu / cpu0 - 1) * 100:>+7.1f}%"
                f"{wall:>13.1f}{wall - wall0:>+8.1f}{best:>10.1f}{best - best0:>+8.1f}")
        if stream:
            scpu = _median(s.stream_rounds)[0]
            line += f"{scpu:>19.1f}{scpu - _median(setups[0].stream_rounds)[0]:>+7.1f}"
        lines.append(line)
    return "\n".join(lines)


async def check_alone(calls: int = 100_000) -> float:
    """µs per TokenCheck.intercept_service on the details of a call with the right token,
    the method lookup an immediate answer: the check with no gRPC around it."""
    handler = grpc.unary_unary_rpc_method_handler(_echo)

    async def lookup(details: Any) -> grpc.RpcMethodHandler:
        return handler

    details = SimpleNamespace(method=f"/{SERVICE}/Echo", invocation_metadata=(
        ("user-agent", f"grpc-python-asyncio/{grpc.__version__}"),
        (auth.TOKEN_METADATA_KEY, TOKEN)))
    check = auth.TokenCheck(TOKEN)
    start = time.perf_counter()
    for _ in range(calls):
        await check.intercept_service(lookup, details)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / calls * 1e6


async def run(opts: argparse.Namespace) -> None:
    """Every setup in turn, `opts.rounds` times; then the table."""
    for _ in range(opts.rounds):
        for setup in SETUPS:
            await measure(setup, opts.calls, opts.stream)
    print(f"{opts.rounds} rounds x {opts.calls} sequential unary calls, {len(PAYLOAD)} B "
          f"payload, {opts.loop}, client and server on one loop; median round, best round:")
    print(table(SETUPS, opts.stream))
    print(f"the check alone (TokenCheck.intercept_service, no gRPC): "
          f"{await check_alone():.2f} µs per call")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m bench.auth_cost`."""
    parser = argparse.ArgumentParser(prog="python -m bench.auth_cost")
    parser.add_argument("--calls", type=int, default=1000, help="Calls per setup per round.")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="Event loop (Weir's processes use uvloop).")
    parser.add_argument("--stream", action="store_true",
                        help="Also time messages on one bidi stream.")
    opts = parser.parse_args(argv)
    if opts.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(run(opts))


if __name__ == "__main__":
    main()
