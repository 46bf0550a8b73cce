"""How a replica reads and writes the user's gRPC messages.

The gRPC ingress passes request bytes untouched (it needs no user protos). The replica
learns each method's (de)serializers the way a gRPC server would: it calls the user's
generated `add_<Service>Servicer_to_server` functions (the config's
`grpc_options.grpc_servicer_functions`) against a recording stand-in for a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weir.import_path import import_attr


@dataclass(frozen=True)
class MethodCodec:
    """Deserialize a request, serialize a response, for one gRPC method."""

    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]


class _AnyServicer:
    def __getattr__(self, name: str) -> Callable[..., Any]:
        def unused(*_args: Any) -> Any:
            raise NotImplementedError(name)

        return unused


class _RecordingServer:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for method, handler in handlers.items():
            self.handlers[f"/{service}/{method}"] = handler

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        for generic in generic_handlers:
            service = getattr(generic, "_name", "")
            for method, handler in (getattr(generic, "_method_handlers", None) or {}).items():
                self.handlers.setdefault(f"/{service}/{method}", handler)


def method_codecs(servicer_functions: list[str]) -> dict[str, MethodCodec]:
    """Codecs by full method path ("/package.Service/Method") for the given add functions."""
    server = _RecordingServer()
    for path in servicer_functions:
        import_attr(path)(_AnyServicer(), server)
    return {
        path: MethodCodec(
            deserialize=h.request_deserializer or (lambda b: b),
            serialize=h.response_serializer or (lambda m: m),
        )
        for path, h in server.handlers.items()
    }
