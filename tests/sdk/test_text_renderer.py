"""weir.runtime.TextRenderer writes the very lines of structlog's ConsoleRenderer without
colours: the tests and tools that read log lines (access lines above all) must not see a
byte changed."""

from __future__ import annotations

from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st

from weir.runtime import TextRenderer

_text = st.text(st.sampled_from("ab =\t\n\"'x-é"), max_size=8)
_value = st.one_of(_text, st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(),
                   st.lists(st.integers(), max_size=2), st.dictionaries(_text, st.integers(),
                                                                        max_size=2))
_columns = st.fixed_dictionaries({}, optional={
    "timestamp": st.sampled_from(["2026-11-30T15:31:29.123456Z", ""]),
    "level": st.sampled_from(["info", "warning", "error", "debug", "critical", "exception"]),
    "event": _text,
    "logger": _text,
    "logger_name": _text,
})
_keys = st.text(st.sampled_from("abcdefgh_"), min_size=1, max_size=6).filter(
    lambda k: k not in {"timestamp", "level", "event", "logger", "logger_name", "stack",
                        "exception", "exc_info"})


def _both(event: dict[str, Any]) -> tuple[str, str]:
    console = structlog.dev.ConsoleRenderer(colors=False)
    return TextRenderer()(None, "info", dict(event)), console(None, "info", dict(event))


@given(_columns, st.dictionaries(_keys, _value, max_size=5))
def test_a_line_is_consoles_line_byte_for_byte(columns: dict[str, Any],
                                               rest: dict[str, Any]) -> None:
    ours, theirs = _both({**columns, **rest})
    assert ours == theirs


def test_an_access_line_reads_as_before() -> None:
    ours, theirs = _both({"timestamp": "2026-11-30T15:31:29.123456Z", "level": "info",
                          "event": "access", "logger": "weir.replica.access", "route": "/a b",
                          "http_method": "GET", "status": "OK", "duration_ms": 0.42,
                          "component": "replica", "pid": 7, "request_id": "abc"})
    assert ours == theirs
    assert ours.startswith("2026-11-30T15:31:29.123456Z [info     ] access")
    assert "route='/a b'" in ours and "duration_ms=0.42" in ours


def test_a_line_with_an_exception_is_consoles_own() -> None:
    ours, theirs = _both({"event": "failed", "level": "error",
                          "exception": "Traceback (most recent call last):\nValueError: x"})
    assert ours == theirs
