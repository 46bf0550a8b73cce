"""Process-wide setup: the one home for global state (logging, event loop, signals).

Every Weir process (controller, proxy, replica, CLI) calls `configure_logging` once with its
component name; every log line is then one structlog event carrying `component` and any
bound context (replica_id, request_id, ...), Python warnings included.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TextIO, cast

import structlog

from weir.config.logging_settings import LoggingSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(component: str, *, reconfigurable: bool = False, **context: Any) -> None:
    """Route structlog events to stderr as one key=value line each, tagged with `component`.

    `WEIR_LOG_LEVEL` (debug, info, warning, error) sets the threshold; `WEIR_LOG_JSON=1` switches
    to JSON lines for log shippers. A `reconfigurable` process (a replica) may later call
    `apply_logging_config`; the others cache their loggers, a little faster.
    """
    global _reconfigurable
    _reconfigurable = reconfigurable
    _configure(environment_logging_settings())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component, pid=os.getpid(), **context)
    # Lines user code logs with the standard library (`logging.getLogger("ray.serve")`, as
    # Ray's docs do) go the same way, with the same context: the request id included.
    root = logging.getLogger()
    if not any(isinstance(h, _StandardToStructlog) for h in root.handlers):
        root.addHandler(_StandardToStructlog())
    # Python warnings (e.g. a user's module using a Ray option Weir ignores, imported by a
    # replica) become log events like any other line of the process.
    warnings.showwarning = _log_warning


def environment_logging_settings() -> LoggingSettings:
    """What WEIR_LOG_LEVEL and WEIR_LOG_JSON ask for (the default of every process)."""
    level = _LEVELS.get(os.environ.get("WEIR_LOG_LEVEL", "info").lower(), logging.INFO)
    return LoggingSettings(json=os.environ.get("WEIR_LOG_JSON") == "1", level=level)


def apply_logging_config(settings: LoggingSettings, log_file: str | None = None) -> None:
    """Switch this process's logging to a deployment's `LoggingConfig` (a replica calls this
    once it knows its deployment): level, TEXT or JSON lines, the standard `LogRecord`
    attributes added to lines from `logging`, and `log_file` (a path under the config's
    logs_dir, created if missing) written besides stderr. The bound context stays."""
    _configure(settings, log_file)


#: Bumped each time the logging config changes (`bound_logger` reads it).
_generation = 0
_bound: dict[str, tuple[int, Any]] = {}


def bound_logger(name: str) -> Any:
    """structlog's logger `name`, bound to the logging config of now and kept until the
    config changes: for a line written per request (the replica's access line) in a process
    whose loggers are not cached (`reconfigurable`), where `get_logger(name).info` binds a
    new logger on every call (a fifth of the line's cost)."""
    cached = _bound.get(name)
    if cached is None or cached[0] != _generation:
        cached = _bound[name] = (_generation, structlog.get_logger(name).bind())
    return cached[1]


def _configure(settings: LoggingSettings, log_file: str | None = None) -> None:
    global _generation
    _generation += 1
    renderer: Any = structlog.processors.JSONRenderer() if settings.json else TextRenderer()
    out: TextIO = sys.stderr
    if log_file is not None:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        # Line-buffered, opened once for the life of the process: every line reaches the file
        # as it is logged, as it reaches stderr.
        out = cast(TextIO, _Tee(sys.stderr, open(log_file, "a", buffering=1, encoding="utf-8")))
    global _standard_attrs
    _standard_attrs = settings.standard_attrs
    structlog.configure(
        processors=[
            _merge_process_context,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # A cached logger keeps the config of its first use: a replica's module-level loggers,
        # used before it learns its deployment's config, must follow that config.
        cache_logger_on_first_use=not _reconfigurable,
    )
    logging.getLogger().setLevel(settings.level)


#: ConsoleRenderer's columns without colours: (key, prefix, padded width, suffix), in order.
_LEVEL_WIDTH = max(map(len, structlog.dev.ConsoleRenderer.get_default_level_styles(colors=False)))
_EVENT_WIDTH = 30
_COLUMNS = (("timestamp", "", 0, ""), ("level", "[", _LEVEL_WIDTH, "]"),
            ("event", "", _EVENT_WIDTH, ""), ("logger", "[", 0, "]"),
            ("logger_name", "[", 0, "]"))
_QUOTED = frozenset(" \t=\r\n\"'")


class TextRenderer:
    """The text lines of structlog's `ConsoleRenderer(colors=False)`, byte for byte, for a
    fraction of its cost: it builds a `StringIO` per field, and every replica writes one
    line per request served (Ray's access log, on by default). Lines with a stack or an
    exception, rare, are left to ConsoleRenderer itself."""

    def __init__(self) -> None:
        self._console = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        if "exception" in event or "exc_info" in event or "stack" in event:
            return self._console(logger, method, event)  # type: ignore[arg-type]
        fields = []
        for key, prefix, width, suffix in _COLUMNS:
            if key in event:
                text = str(event.pop(key))
                if width:
                    text = text.ljust(width)
                fields.append(prefix + text + suffix)
        for key in sorted(event):
            value = event[key]
            if not isinstance(value, str) or not _QUOTED.isdisjoint(value):
                value = repr(value)
            fields.append(key + "=" + value)
        return " ".join(field for field in fields if field).rstrip(" ")


#: Context every line of the process carries, whatever task or thread logs it.
_process_context: dict[str, Any] = {}


def bind_process_context(**context: Any) -> None:
    """Add fields to every later line of this process, in every task and thread (a replica's
    app and deployment: its calls run in tasks that do not inherit the context bound where it
    learnt them)."""
    _process_context.update(context)


def _merge_process_context(logger: Any, method: str,
                           event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _process_context.items():
        event.setdefault(key, value)
    return event


#: `LoggingConfig.additional_log_standard_attrs` of this process.
_standard_attrs: tuple[str, ...] = ()
#: Whether `apply_logging_config` may come (`configure_logging(reconfigurable=True)`).
_reconfigurable = False


class _Tee:
    """A text stream writing to two: stderr and a deployment's log file."""

    def __init__(self, first: TextIO, second: TextIO) -> None:
        self.first, self.second = first, second

    def write(self, text: str) -> int:
        self.first.write(text)
        return self.second.write(text)

    def flush(self) -> None:
        self.first.flush()
        self.second.flush()


class _StandardToStructlog(logging.Handler):
    """Hands standard-library log records to structlog, in the logging thread's context."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.getMessage()
            extra: dict[str, Any] = {"logger": record.name}
            for attr in _standard_attrs:
                extra[attr] = getattr(record, attr, None)
            if record.exc_info:
                extra["exc_info"] = record.exc_info
            structlog.get_logger().log(record.levelno, event, **extra)
        except Exception:
            self.handleError(record)


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    structlog.get_logger().warning(str(message), category=category.__name__,
                                   source=f"{filename}:{lineno}")


def install_event_loop_policy() -> None:
    """Use uvloop where it is installed: it serves grpc.aio and HTTP 10-15 % faster."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` on a fresh event loop; SIGTERM and SIGINT set `stop` once.

    `main` owns the orderly shutdown: it waits on the event, then drains and returns.
    """
    install_event_loop_policy()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
