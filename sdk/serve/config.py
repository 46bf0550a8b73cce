"""`weir.serve.config`: Ray's `ray.serve.config` module path: `AutoscalingConfig`,
`HTTPOptions`, `gRPCOptions`, `ProxyLocation` and `LoggingConfig`.

`HTTPOptions` and `gRPCOptions` are the config file's own models, so an object of either
passes wherever Ray takes one (`serve.start(http_options=HTTPOptions(port=8001))`).
`LoggingConfig` is `weir.config.logging_config.LoggingConfig` (how replicas log).
"""

from __future__ import annotations

import enum

from weir.config.autoscaling import AutoscalingConfig
from weir.config.logging_config import LoggingConfig
from weir.config.schema import GrpcOptionsSchema, HTTPOptionsSchema

HTTPOptions = HTTPOptionsSchema
gRPCOptions = GrpcOptionsSchema


class ProxyLocation(str, enum.Enum):
    """Where Ray runs proxies (Weir runs the ones its cluster was started with)."""

    Disabled = "Disabled"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"


__all__ = ["AutoscalingConfig", "HTTPOptions", "LoggingConfig", "ProxyLocation", "gRPCOptions"]
