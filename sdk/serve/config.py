"""`weir.serve.config`: Ray's `ray.serve.config` module path: `AutoscalingConfig`,
`HTTPOptions`, `gRPCOptions`, `ProxyLocation` and `LoggingConfig`.

`HTTPOptions` and `gRPCOptions` are the config file's own models, so an object of either
passes wherever Ray takes one (`serve.start(http_options=HTTPOptions(port=8001))`).
`LoggingConfig` validates Ray's fields; Weir accepts it and warns that it ignores it (see
docs/compatibility.md).
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from weir.config.autoscaling import AutoscalingConfig
from weir.config.schema import GrpcOptionsSchema, HTTPOptionsSchema

HTTPOptions = HTTPOptionsSchema
gRPCOptions = GrpcOptionsSchema


class ProxyLocation(str, enum.Enum):
    """Where Ray runs proxies (Weir runs the ones its cluster was started with)."""

    Disabled = "Disabled"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"


class LoggingConfig(BaseModel):
    """Ray's logging options (accepted; Weir's processes log structured events to stderr)."""

    model_config = ConfigDict(extra="forbid")

    encoding: Literal["TEXT", "JSON"] = "TEXT"
    log_level: int | str = "INFO"
    logs_dir: str | None = None
    enable_access_log: bool = True
    additional_log_standard_attrs: list[str] = []


__all__ = ["AutoscalingConfig", "HTTPOptions", "LoggingConfig", "ProxyLocation", "gRPCOptions"]
