"""Ray Serve's `LoggingConfig`: its fields, their defaults and the rules a value must follow.

Where it is set, as in Ray: `serve.run(logging_config=...)` and an application's entry in a
config file (every deployment of the app that sets none of its own), and a deployment's
options (`@serve.deployment(logging_config=...)` or its config entry). A deployment's own
config wins over its application's. The replica applies it to its process's logging
(`weir.runtime.configure_logging`); this module only checks and reads plain data.

Fields (Ray's names and defaults):
- `encoding`: "TEXT" (key=value lines) or "JSON" (one JSON object a line).
- `log_level`: a level name ("DEBUG", "info", ...) or number (`logging.DEBUG`); INFO.
- `logs_dir`: a directory each replica also writes its lines to, one file a replica
  (`replica_<app>_<deployment>_<replica_id>.log`); None: stderr only (Weir's processes log
  to stderr, which `weir start` collects).
- `enable_access_log`: one INFO line per call a replica serves (route, status, duration).
- `additional_log_standard_attrs`: attributes of the standard library's `LogRecord`
  ("funcName", "lineno", ...) added to the lines user code logs with `logging`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from weir.config.logging_settings import (
    LoggingSettings,
    check_standard_attrs,
    level_number,
    logging_settings,
    replica_log_file,
)

__all__ = ["LoggingConfig", "LoggingSettings", "check_logging_config", "level_number",
           "logging_settings", "replica_log_file"]

class LoggingConfig(BaseModel):
    """Ray's `ray.serve.config.LoggingConfig`: how a deployment's replicas log."""

    model_config = ConfigDict(extra="forbid")

    encoding: Literal["TEXT", "JSON"] = "TEXT"
    log_level: int | str = "INFO"
    logs_dir: str | None = None
    enable_access_log: bool = True
    additional_log_standard_attrs: list[str] = []

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: int | str) -> int | str:
        level_number(value)
        return value

    @field_validator("additional_log_standard_attrs")
    @classmethod
    def _attrs(cls, value: list[str]) -> list[str]:
        return check_standard_attrs(value)


def check_logging_config(value: Any) -> dict[str, Any] | None:
    """The schema's rule for `logging_config`: a `LoggingConfig` or a mapping of its fields,
    returned as the plain mapping of the fields given (so a config entry stays sparse), or
    ValueError naming each bad field."""
    if value is None:
        return None
    if isinstance(value, LoggingConfig):
        return value.model_dump(exclude_unset=True)
    if not isinstance(value, Mapping):
        raise ValueError("must be a LoggingConfig or a mapping of its fields "
                         f"(encoding, log_level, ...), not {type(value).__name__}")
    try:
        LoggingConfig.model_validate(dict(value))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(problems) from None
    return dict(value)
