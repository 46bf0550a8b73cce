"""`bound_logger`: a logger bound once for lines written per request, that still follows
the process's logging config when it changes."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from weir import runtime
from weir.config.logging_config import LoggingSettings


def test_a_bound_logger_is_kept_until_the_config_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    saved, root_level = structlog.get_config(), logging.getLogger().level
    try:
        runtime.apply_logging_config(LoggingSettings())
        first = runtime.bound_logger("weir.replica.access")
        assert runtime.bound_logger("weir.replica.access") is first
        first.info("access", status="200")
        assert "access" in out.getvalue() and "status=200" in out.getvalue()
        runtime.apply_logging_config(LoggingSettings(json=True))  # a replica's deployment
        second = runtime.bound_logger("weir.replica.access")
        assert second is not first
        second.info("access", status="201")
        assert json.loads(out.getvalue().strip().splitlines()[-1])["status"] == "201"
    finally:
        structlog.configure(**saved)
        logging.getLogger().setLevel(root_level)
