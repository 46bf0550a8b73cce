"""The controllers' and proxies' logging follows the cluster's logging_config."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from weir.config.logging_config import LoggingSettings
from weir.etcd.keys import LOGGING_CONFIG_KEY
from weir.etcd.memory_store import MemoryStore
from weir.system_logging import follow_system_logging, settings_of, system_log_file


def test_settings_of_a_stored_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIR_LOG_LEVEL", "warning")
    monkeypatch.delenv("WEIR_LOG_JSON", raising=False)
    assert settings_of(b"").level == logging.WARNING, "none: the environment's"
    assert settings_of(b"{}").level == logging.WARNING
    chosen = settings_of(json.dumps({"encoding": "JSON", "log_level": "DEBUG",
                                     "logs_dir": "/logs"}).encode())
    assert (chosen.json, chosen.level, chosen.logs_dir) == (True, logging.DEBUG, "/logs")
    with pytest.raises(ValueError, match="log level"):
        settings_of(b'{"log_level": "LOUD"}')


def test_log_files_are_named_as_rays() -> None:
    settings = settings_of(b'{"logs_dir": "/logs"}')
    assert system_log_file(settings, "proxy", "ab12") == "/logs/proxy_ab12.log"
    assert system_log_file(settings_of(b"{}"), "proxy", "ab12") is None


def test_a_process_switches_when_the_key_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[tuple[int, str | None]] = []

    async def scenario() -> None:
        changed = asyncio.Event()

        def apply(settings: LoggingSettings, log_file: str | None = None) -> None:
            applied.append((settings.level, log_file))
            changed.set()

        monkeypatch.setattr("weir.system_logging.apply_logging_config", apply)
        store = MemoryStore()
        task = asyncio.get_running_loop().create_task(
            follow_system_logging(store, "controller", "c1", interval_s=0.01))

        async def until(n: int) -> None:
            while len(applied) < n:
                await changed.wait()
                changed.clear()

        # Nothing stored: the process keeps the logging it started with.
        await store.put(LOGGING_CONFIG_KEY, b'{"log_level": "DEBUG", "logs_dir": "/l"}')
        await asyncio.wait_for(until(1), 5)
        await store.put(LOGGING_CONFIG_KEY, b'{"log_level": "LOUD"}')  # refused: kept
        await store.put(LOGGING_CONFIG_KEY, b'{"log_level": "ERROR"}')
        await asyncio.wait_for(until(2), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert applied == [(logging.DEBUG, "/l/controller_c1.log"), (logging.ERROR, None)]
