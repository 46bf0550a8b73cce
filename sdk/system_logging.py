"""The logging of Weir's own processes (controllers, proxies) follows the cluster's
`logging_config`, as Ray's `serve.start(logging_config=...)` and a config file's top-level
`logging_config` set its controller's and proxies' logging.

Design. The config lives under one etcd key (`LOGGING_CONFIG_KEY`, written by a deploy);
each process reads it every second and switches its logging when the value changes: level,
TEXT or JSON lines, standard `LogRecord` attributes and, with `logs_dir`, a file of its own
(`controller_<id>.log`, `proxy_<id>.log`, as Ray names them). Polling one small key is
cheaper to get right than a watch that must survive etcd failovers, and a second is soon
enough for a log level. While etcd is away the process keeps the logging it has. An absent
or empty value means WEIR_LOG_LEVEL and WEIR_LOG_JSON, as before any config.
"""

from __future__ import annotations

import asyncio
import json
import os

import structlog

from weir.config.logging_settings import LoggingSettings, logging_settings
from weir.etcd.keys import LOGGING_CONFIG_KEY
from weir.etcd.store import Store, StoreError
from weir.runtime import apply_logging_config, environment_logging_settings

log = structlog.get_logger("weir.logging")

#: Seconds between two reads of the cluster's logging_config.
POLL_S = 1.0


def system_log_file(settings: LoggingSettings, component: str, process_id: str) -> str | None:
    """The file a controller or proxy also writes its lines to (None without logs_dir). Pure."""
    if settings.logs_dir is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in process_id)
    return os.path.join(settings.logs_dir, f"{component}_{safe}.log")


def settings_of(raw: bytes) -> LoggingSettings:
    """The settings a stored logging_config asks for (the environment's when empty), or
    ValueError naming what is wrong with it. Pure but for reading the environment."""
    config = json.loads(raw) if raw.strip() else None
    if not config:
        return environment_logging_settings()
    if not isinstance(config, dict):
        raise ValueError(f"logging_config must be a mapping, not {type(config).__name__}")
    return logging_settings(config)


async def follow_system_logging(store: Store, component: str, process_id: str,
                                interval_s: float = POLL_S) -> None:
    """Keep this process's logging in step with the cluster's logging_config (runs until
    cancelled). The process must have called `configure_logging(..., reconfigurable=True)`."""
    applied = b""
    while True:
        try:
            kv = await store.get(LOGGING_CONFIG_KEY)
        except StoreError:
            await asyncio.sleep(interval_s)  # etcd away: keep the logging there is
            continue
        raw = kv.value if kv is not None else b""
        if raw != applied:
            try:
                settings = settings_of(raw)
            except ValueError as exc:
                log.warning("cannot apply the cluster's logging_config", error=str(exc))
            else:
                apply_logging_config(settings, system_log_file(settings, component, process_id))
                log.info("logging follows the cluster's logging_config",
                         config=raw.decode(errors="replace") or "(none)")
            applied = raw
        await asyncio.sleep(interval_s)
