"""How a replica reads and writes the user's gRPC messages, and what it tells the ingress
about the user's services.

The gRPC ingress passes request bytes untouched (it needs no user protos). The replica
learns each method's (de)serializers and kind the way a gRPC server would: it calls the
user's generated `add_<Service>Servicer_to_server` functions (the config's
`grpc_options.grpc_servicer_functions`) against a recording stand-in for a server. The
serializers are the generated message classes' own, so the same record also yields the
proto files that declare the services (`service_catalog`): the ingress lists and describes
them through reflection without ever importing user code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from weir.import_path import import_attr
from weir.protos import weir_pb2 as pb


@dataclass(frozen=True)
class MethodCodec:
    """Deserialize a request, serialize a response, for one gRPC method; and its kind."""

    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    client_streaming: bool = False
    server_streaming: bool = False
    #: The generated request message class, when there is one (its file is the service's).
    request_type: Any = None


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


def _identity(data: Any) -> Any:
    return data


def method_codecs(servicer_functions: list[str]) -> dict[str, MethodCodec]:
    """Codecs by full method path ("/package.Service/Method") for the given add functions."""
    server = _RecordingServer()
    for path in servicer_functions:
        import_attr(path)(_AnyServicer(), server)
    return {
        path: MethodCodec(
            deserialize=h.request_deserializer or _identity,
            serialize=h.response_serializer or _identity,
            client_streaming=bool(h.request_streaming),
            server_streaming=bool(h.response_streaming),
            request_type=getattr(h.request_deserializer, "__self__", None),
        )
        for path, h in server.handlers.items()
    }


def _files_in_import_order(files: Iterable[Any]) -> list[Any]:
    """The FileDescriptors given and all they import, each after its imports."""
    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for file in files:
        visit(file)
    return ordered


def service_catalog(codecs: dict[str, MethodCodec],
                    implements: Callable[[str], bool]) -> pb.GrpcServicesReply:
    """The services the deployment serves, every method's kind, and the services' proto
    files (serialized FileDescriptorProtos). grpc_servicer_functions are the cluster's, so
    every app registers every service: an app serves those of whose methods it
    `implements` one (by method name). A method whose request type is no generated message
    class still routes; its file is simply unknown to reflection."""
    served = {path for path in codecs if implements(path.rsplit("/", 1)[-1])}
    services = sorted({path.split("/")[1] for path in served})
    files = [codecs[path].request_type.DESCRIPTOR.file for path in sorted(served)
             if hasattr(codecs[path].request_type, "DESCRIPTOR")]
    return pb.GrpcServicesReply(
        services=services,
        methods=[pb.GrpcMethod(path=path, client_streaming=codec.client_streaming,
                               server_streaming=codec.server_streaming)
                 for path, codec in sorted(codecs.items())],
        file_descriptors=[file.serialized_pb for file in _files_in_import_order(files)],
    )
