"""A checked `logging_config` read for one process: plain numbers and flags.

Every server process (proxy, node agent, replica) reads the cluster's or its deployment's
`logging_config`, which the controller checked against `weir.config.logging_config`'s
`LoggingConfig` when it accepted the config. Reading it needs no pydantic, and importing
pydantic and the schema costs a process about 17 MB resident: so this module does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Ray's defaults (`LoggingConfig`'s field defaults, which a test keeps equal).
DEFAULT_ENCODING = "TEXT"
DEFAULT_LEVEL = "INFO"
ENCODINGS = ("TEXT", "JSON")
FIELDS = frozenset({"encoding", "log_level", "logs_dir", "enable_access_log",
                    "additional_log_standard_attrs"})
#: The attributes every `LogRecord` has; `additional_log_standard_attrs` must name some.
STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})))


def check_standard_attrs(value: list[str]) -> list[str]:
    """`value` if every name in it is a `LogRecord` attribute, else ValueError naming the
    others and the choices."""
    unknown = sorted(set(value) - STANDARD_ATTRS)
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} is not an attribute of "
                         f"logging.LogRecord; choose from {', '.join(sorted(STANDARD_ATTRS))}")
    return value


def level_number(value: int | str) -> int:
    """The numeric level of "DEBUG"/"debug"/10, or ValueError naming the accepted names."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = logging.getLevelName(str(value).upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {value!r}: use DEBUG, INFO, WARNING, ERROR or "
                         "CRITICAL, or a number")
    return number


@dataclass(frozen=True)
class LoggingSettings:
    """A `LoggingConfig` resolved for a process: numbers and flags, no pydantic."""

    json: bool = False
    level: int = logging.INFO
    logs_dir: str | None = None
    access_log: bool = True
    standard_attrs: tuple[str, ...] = ()


def logging_settings(config: Mapping[str, Any] | None) -> LoggingSettings:
    """The settings a `logging_config` mapping asks for; None: Ray's defaults. ValueError
    naming the field if it breaks a rule `LoggingConfig` enforces (a goal written by an
    older Weir may hold one). Pure."""
    given = dict(config or {})
    unknown = sorted(set(given) - FIELDS)
    if unknown:
        raise ValueError(f"logging_config has no field {unknown[0]!r}; its fields are "
                         f"{', '.join(sorted(FIELDS))}")
    if given.get("encoding", DEFAULT_ENCODING) not in ENCODINGS:
        raise ValueError(f"logging_config.encoding must be TEXT or JSON, not "
                         f"{given['encoding']!r}")
    check_standard_attrs(list(given.get("additional_log_standard_attrs") or ()))
    return LoggingSettings(
        json=given.get("encoding", DEFAULT_ENCODING) == "JSON",
        level=level_number(given.get("log_level", DEFAULT_LEVEL)),
        logs_dir=given.get("logs_dir"), access_log=bool(given.get("enable_access_log", True)),
        standard_attrs=tuple(given.get("additional_log_standard_attrs") or ()))


def replica_log_file(settings: LoggingSettings, app: str, deployment: str,
                     replica_id: str) -> str | None:
    """The file a replica writes its lines to under `logs_dir` (None without one), named as
    Ray names a replica's log. Pure."""
    if settings.logs_dir is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_"
                   for c in f"replica_{app}_{deployment}_{replica_id}")
    return os.path.join(settings.logs_dir, f"{safe}.log")
