from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[CallOutcome]
    REJECTED: _ClassVar[CallOutcome]
    USER_ERROR: _ClassVar[CallOutcome]
    UNAVAILABLE: _ClassVar[CallOutcome]
    TIMEOUT: _ClassVar[CallOutcome]

class ReplicaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_STATE_UNSPECIFIED: _ClassVar[ReplicaState]
    STARTING: _ClassVar[ReplicaState]
    INITIALIZING: _ClassVar[ReplicaState]
    RUNNING: _ClassVar[ReplicaState]
    FAILED: _ClassVar[ReplicaState]
    STOPPING: _ClassVar[ReplicaState]

class CommandKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_KIND_UNSPECIFIED: _ClassVar[CommandKind]
    REGISTERED: _ClassVar[CommandKind]
    INIT: _ClassVar[CommandKind]
    RECONFIGURE: _ClassVar[CommandKind]
    STOP: _ClassVar[CommandKind]
OK: CallOutcome
REJECTED: CallOutcome
USER_ERROR: CallOutcome
UNAVAILABLE: CallOutcome
TIMEOUT: CallOutcome
REPLICA_STATE_UNSPECIFIED: ReplicaState
STARTING: ReplicaState
INITIALIZING: ReplicaState
RUNNING: ReplicaState
FAILED: ReplicaState
STOPPING: ReplicaState
COMMAND_KIND_UNSPECIFIED: CommandKind
REGISTERED: CommandKind
INIT: CommandKind
RECONFIGURE: CommandKind
STOP: CommandKind

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    value: bytes
    def __init__(self, name: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class HttpRequest(_message.Message):
    __slots__ = ("method", "path", "query_string", "headers", "body", "root_path", "scheme", "client_host", "client_port", "http_version", "more_body")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_STRING_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ROOT_PATH_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_HOST_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PORT_FIELD_NUMBER: _ClassVar[int]
    HTTP_VERSION_FIELD_NUMBER: _ClassVar[int]
    MORE_BODY_FIELD_NUMBER: _ClassVar[int]
    method: str
    path: str
    query_string: bytes
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    body: bytes
    root_path: str
    scheme: str
    client_host: str
    client_port: int
    http_version: str
    more_body: bool
    def __init__(self, method: _Optional[str] = ..., path: _Optional[str] = ..., query_string: _Optional[bytes] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., body: _Optional[bytes] = ..., root_path: _Optional[str] = ..., scheme: _Optional[str] = ..., client_host: _Optional[str] = ..., client_port: _Optional[int] = ..., http_version: _Optional[str] = ..., more_body: _Optional[bool] = ...) -> None: ...

class BodyChunk(_message.Message):
    __slots__ = ("data", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class CallPart(_message.Message):
    __slots__ = ("request", "body")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    request: CallRequest
    body: BodyChunk
    def __init__(self, request: _Optional[_Union[CallRequest, _Mapping]] = ..., body: _Optional[_Union[BodyChunk, _Mapping]] = ...) -> None: ...

class GrpcRequest(_message.Message):
    __slots__ = ("method_path", "payload", "metadata", "peer", "more_messages")
    METHOD_PATH_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    MORE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    method_path: str
    payload: bytes
    metadata: _containers.RepeatedCompositeFieldContainer[Header]
    peer: str
    more_messages: bool
    def __init__(self, method_path: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., peer: _Optional[str] = ..., more_messages: _Optional[bool] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("request_id", "method", "deadline", "http", "pickled_args", "caller", "grpc", "multiplexed_model_id", "traceparent")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    PICKLED_ARGS_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    MULTIPLEXED_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    method: str
    deadline: float
    http: HttpRequest
    pickled_args: bytes
    caller: str
    grpc: GrpcRequest
    multiplexed_model_id: str
    traceparent: str
    def __init__(self, request_id: _Optional[str] = ..., method: _Optional[str] = ..., deadline: _Optional[float] = ..., http: _Optional[_Union[HttpRequest, _Mapping]] = ..., pickled_args: _Optional[bytes] = ..., caller: _Optional[str] = ..., grpc: _Optional[_Union[GrpcRequest, _Mapping]] = ..., multiplexed_model_id: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("outcome", "status", "headers", "body", "pickled", "error", "error_type", "traceback", "ongoing", "more_body", "admitted", "grpc_code", "grpc_details", "grpc_trailing_metadata")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    PICKLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    ONGOING_FIELD_NUMBER: _ClassVar[int]
    MORE_BODY_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    GRPC_CODE_FIELD_NUMBER: _ClassVar[int]
    GRPC_DETAILS_FIELD_NUMBER: _ClassVar[int]
    GRPC_TRAILING_METADATA_FIELD_NUMBER: _ClassVar[int]
    outcome: CallOutcome
    status: int
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    body: bytes
    pickled: bytes
    error: str
    error_type: str
    traceback: str
    ongoing: int
    more_body: bool
    admitted: bool
    grpc_code: int
    grpc_details: str
    grpc_trailing_metadata: _containers.RepeatedCompositeFieldContainer[Header]
    def __init__(self, outcome: _Optional[_Union[CallOutcome, str]] = ..., status: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., body: _Optional[bytes] = ..., pickled: _Optional[bytes] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., traceback: _Optional[str] = ..., ongoing: _Optional[int] = ..., more_body: _Optional[bool] = ..., admitted: _Optional[bool] = ..., grpc_code: _Optional[int] = ..., grpc_details: _Optional[str] = ..., grpc_trailing_metadata: _Optional[_Iterable[_Union[Header, _Mapping]]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("call_id", "request", "stream", "cancel", "reply", "last", "batch")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    request: CallRequest
    stream: bool
    cancel: bool
    reply: CallReply
    last: bool
    batch: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, call_id: _Optional[int] = ..., request: _Optional[_Union[CallRequest, _Mapping]] = ..., stream: _Optional[bool] = ..., cancel: _Optional[bool] = ..., reply: _Optional[_Union[CallReply, _Mapping]] = ..., last: _Optional[bool] = ..., batch: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...

class ChannelSocketRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChannelSocketReply(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class GrpcServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GrpcMethod(_message.Message):
    __slots__ = ("path", "client_streaming", "server_streaming")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STREAMING_FIELD_NUMBER: _ClassVar[int]
    SERVER_STREAMING_FIELD_NUMBER: _ClassVar[int]
    path: str
    client_streaming: bool
    server_streaming: bool
    def __init__(self, path: _Optional[str] = ..., client_streaming: _Optional[bool] = ..., server_streaming: _Optional[bool] = ...) -> None: ...

class GrpcServicesReply(_message.Message):
    __slots__ = ("services", "methods", "file_descriptors")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    FILE_DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    methods: _containers.RepeatedCompositeFieldContainer[GrpcMethod]
    file_descriptors: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, services: _Optional[_Iterable[str]] = ..., methods: _Optional[_Iterable[_Union[GrpcMethod, _Mapping]]] = ..., file_descriptors: _Optional[_Iterable[bytes]] = ...) -> None: ...

class WebSocketFrame(_message.Message):
    __slots__ = ("request", "is_text", "text", "data", "accept", "subprotocol", "headers", "close_code", "close_reason", "outcome", "error")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    IS_TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    SUBPROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_CODE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_REASON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request: CallRequest
    is_text: bool
    text: str
    data: bytes
    accept: bool
    subprotocol: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    close_code: int
    close_reason: str
    outcome: CallOutcome
    error: str
    def __init__(self, request: _Optional[_Union[CallRequest, _Mapping]] = ..., is_text: _Optional[bool] = ..., text: _Optional[str] = ..., data: _Optional[bytes] = ..., accept: _Optional[bool] = ..., subprotocol: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., close_code: _Optional[int] = ..., close_reason: _Optional[str] = ..., outcome: _Optional[_Union[CallOutcome, str]] = ..., error: _Optional[str] = ...) -> None: ...

class HealthCheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheckReply(_message.Message):
    __slots__ = ("healthy", "message")
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    message: str
    def __init__(self, healthy: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ReplicaReport(_message.Message):
    __slots__ = ("replica_id", "address", "pid", "state", "message", "ongoing", "version", "user_config_json", "multiplexed_models", "metrics_address", "health_check")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ONGOING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    USER_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    MULTIPLEXED_MODELS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    pid: int
    state: ReplicaState
    message: str
    ongoing: int
    version: str
    user_config_json: str
    multiplexed_models: MultiplexedModels
    metrics_address: str
    health_check: HealthCheckAnswer
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., pid: _Optional[int] = ..., state: _Optional[_Union[ReplicaState, str]] = ..., message: _Optional[str] = ..., ongoing: _Optional[int] = ..., version: _Optional[str] = ..., user_config_json: _Optional[str] = ..., multiplexed_models: _Optional[_Union[MultiplexedModels, _Mapping]] = ..., metrics_address: _Optional[str] = ..., health_check: _Optional[_Union[HealthCheckAnswer, _Mapping]] = ...) -> None: ...

class HealthCheckAnswer(_message.Message):
    __slots__ = ("check_id", "healthy", "message", "next_within_s")
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_WITHIN_S_FIELD_NUMBER: _ClassVar[int]
    check_id: int
    healthy: bool
    message: str
    next_within_s: float
    def __init__(self, check_id: _Optional[int] = ..., healthy: _Optional[bool] = ..., message: _Optional[str] = ..., next_within_s: _Optional[float] = ...) -> None: ...

class MultiplexedModels(_message.Message):
    __slots__ = ("model_ids",)
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplicaCommand(_message.Message):
    __slots__ = ("kind", "spec_json", "user_config_json", "graceful_shutdown_timeout_s")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    USER_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_SHUTDOWN_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    kind: CommandKind
    spec_json: str
    user_config_json: str
    graceful_shutdown_timeout_s: float
    def __init__(self, kind: _Optional[_Union[CommandKind, str]] = ..., spec_json: _Optional[str] = ..., user_config_json: _Optional[str] = ..., graceful_shutdown_timeout_s: _Optional[float] = ...) -> None: ...

class ReplicaTarget(_message.Message):
    __slots__ = ("replica_id", "address", "ongoing", "multiplexed_model_ids", "multiplexed")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ONGOING_FIELD_NUMBER: _ClassVar[int]
    MULTIPLEXED_MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLEXED_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    ongoing: int
    multiplexed_model_ids: _containers.RepeatedScalarFieldContainer[str]
    multiplexed: bool
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., ongoing: _Optional[int] = ..., multiplexed_model_ids: _Optional[_Iterable[str]] = ..., multiplexed: _Optional[bool] = ...) -> None: ...

class DeploymentTargets(_message.Message):
    __slots__ = ("app", "deployment", "max_ongoing_requests", "max_queued_requests", "replicas", "removed_replica_ids", "load_positions", "load_ongoing")
    APP_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_ONGOING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_REPLICA_IDS_FIELD_NUMBER: _ClassVar[int]
    LOAD_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    LOAD_ONGOING_FIELD_NUMBER: _ClassVar[int]
    app: str
    deployment: str
    max_ongoing_requests: int
    max_queued_requests: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaTarget]
    removed_replica_ids: _containers.RepeatedScalarFieldContainer[str]
    load_positions: _containers.RepeatedScalarFieldContainer[int]
    load_ongoing: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, app: _Optional[str] = ..., deployment: _Optional[str] = ..., max_ongoing_requests: _Optional[int] = ..., max_queued_requests: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaTarget, _Mapping]]] = ..., removed_replica_ids: _Optional[_Iterable[str]] = ..., load_positions: _Optional[_Iterable[int]] = ..., load_ongoing: _Optional[_Iterable[int]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("route_prefix", "app", "deployment")
    ROUTE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    route_prefix: str
    app: str
    deployment: str
    def __init__(self, route_prefix: _Optional[str] = ..., app: _Optional[str] = ..., deployment: _Optional[str] = ...) -> None: ...

class RouteTable(_message.Message):
    __slots__ = ("version", "routes", "deployments", "http_options_json", "delta_from", "removed_deployments")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    HTTP_OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FROM_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentTargets]
    http_options_json: str
    delta_from: int
    removed_deployments: _containers.RepeatedCompositeFieldContainer[DeploymentTargets]
    def __init__(self, version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., deployments: _Optional[_Iterable[_Union[DeploymentTargets, _Mapping]]] = ..., http_options_json: _Optional[str] = ..., delta_from: _Optional[int] = ..., removed_deployments: _Optional[_Iterable[_Union[DeploymentTargets, _Mapping]]] = ...) -> None: ...

class WatchRoutesRequest(_message.Message):
    __slots__ = ("subscriber", "accepts_deltas", "accepts_compact_load")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_DELTAS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_COMPACT_LOAD_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    accepts_deltas: bool
    accepts_compact_load: bool
    def __init__(self, subscriber: _Optional[str] = ..., accepts_deltas: _Optional[bool] = ..., accepts_compact_load: _Optional[bool] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("config_json", "partial", "pickled_apps", "dry_run")
    class PickledAppsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    PICKLED_APPS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    config_json: str
    partial: bool
    pickled_apps: _containers.ScalarMap[str, bytes]
    dry_run: bool
    def __init__(self, config_json: _Optional[str] = ..., partial: _Optional[bool] = ..., pickled_apps: _Optional[_Mapping[str, bytes]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DeployReply(_message.Message):
    __slots__ = ("message", "revision", "diff_json")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIFF_JSON_FIELD_NUMBER: _ClassVar[int]
    message: str
    revision: int
    diff_json: str
    def __init__(self, message: _Optional[str] = ..., revision: _Optional[int] = ..., diff_json: _Optional[str] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ("name", "history", "revision", "history_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    history: bool
    revision: int
    history_limit: int
    def __init__(self, name: _Optional[str] = ..., history: _Optional[bool] = ..., revision: _Optional[int] = ..., history_limit: _Optional[int] = ...) -> None: ...

class GetConfigReply(_message.Message):
    __slots__ = ("config_json",)
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    config_json: str
    def __init__(self, config_json: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetStatusReply(_message.Message):
    __slots__ = ("status_json",)
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    def __init__(self, status_json: _Optional[str] = ...) -> None: ...

class DeleteAppsRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteAppsReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReplicasRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReplicasReply(_message.Message):
    __slots__ = ("replicas_json",)
    REPLICAS_JSON_FIELD_NUMBER: _ClassVar[int]
    replicas_json: str
    def __init__(self, replicas_json: _Optional[str] = ...) -> None: ...

class DeploymentQueue(_message.Message):
    __slots__ = ("app", "deployment", "queued")
    APP_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    app: str
    deployment: str
    queued: int
    def __init__(self, app: _Optional[str] = ..., deployment: _Optional[str] = ..., queued: _Optional[int] = ...) -> None: ...

class QueueReport(_message.Message):
    __slots__ = ("caller", "queues")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    caller: str
    queues: _containers.RepeatedCompositeFieldContainer[DeploymentQueue]
    def __init__(self, caller: _Optional[str] = ..., queues: _Optional[_Iterable[_Union[DeploymentQueue, _Mapping]]] = ...) -> None: ...

class QueueReportReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PackageChunk(_message.Message):
    __slots__ = ("hash", "data")
    HASH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    hash: str
    data: bytes
    def __init__(self, hash: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PackageRef(_message.Message):
    __slots__ = ("hash", "size")
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    hash: str
    size: int
    def __init__(self, hash: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class GetEventsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class GetEventsReply(_message.Message):
    __slots__ = ("events_json",)
    EVENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    events_json: str
    def __init__(self, events_json: _Optional[str] = ...) -> None: ...
