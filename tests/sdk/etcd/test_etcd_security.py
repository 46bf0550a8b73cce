"""Weir's etcd client against a real etcd that checks who calls: one serving TLS only to
clients with a certificate its CA signed (`--client-cert-auth`), one with its own users
(`etcdctl user add`, `auth enable`). The credentials come the way every Weir process
takes them: the WEIR_ETCD_* environment (the chart fills it from Secrets)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("cryptography", reason="pip install -e '.[dev]'")

from tests.sdk.etcd.secured_etcd import ROOT_USER, enable_auth, make_certificates
from weir.etcd.endpoints import EtcdCredentials, TLSConfig
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.server import EtcdServer, find_etcd_binary
from weir.etcd.store import StoreError, StoreUnavailableError
from weir.processes import free_port, spawn, terminate

T = TypeVar("T")
USER, PASSWORD = ROOT_USER, "s3cret"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def put_and_get(store: EtcdStore, key: str) -> bytes | None:
    try:
        await store.put(key, b"v")
        kv = await store.get(key)
        return kv.value if kv else None
    finally:
        await store.close()


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """etcd serving https on loopback to clients with a certificate from the test CA."""
    folder = tmp_path_factory.mktemp("etcd-tls")
    certs = make_certificates(folder / "certs")
    port, peer = free_port("127.0.0.1"), free_port("127.0.0.1")
    url = f"https://127.0.0.1:{port}"
    proc = spawn([find_etcd_binary(), "--name", "tls", "--data-dir", str(folder / "data"),
                  "--listen-client-urls", url, "--advertise-client-urls", url,
                  "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                  "--initial-cluster", f"tls=http://127.0.0.1:{peer}",
                  "--client-cert-auth", "--trusted-ca-file", str(certs.ca),
                  "--cert-file", str(certs.server_cert), "--key-file", str(certs.server_key),
                  "--log-level", "warn"], log_path=folder / "etcd.log")
    tls = TLSConfig(str(certs.ca), str(certs.client_cert), str(certs.client_key))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                run(EtcdStore(url, tls=tls, timeout=1).get("/ready"))
                break
            except StoreError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((folder / "etcd.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield url, certs
    finally:
        terminate(proc, 5)


def test_mutual_tls_with_files_from_the_environment(
        tls_etcd: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    url, certs = tls_etcd
    monkeypatch.setenv("WEIR_ETCD_CA_FILE", str(certs.ca))
    monkeypatch.setenv("WEIR_ETCD_CERT_FILE", str(certs.client_cert))
    monkeypatch.setenv("WEIR_ETCD_KEY_FILE", str(certs.client_key))
    assert run(put_and_get(EtcdStore(url), "/tls/env")) == b"v"


def test_without_a_client_certificate_etcd_is_not_reached(tls_etcd: tuple[str, Any]) -> None:
    url, certs = tls_etcd
    with pytest.raises(StoreUnavailableError, match=r"etcd at 127\.0\.0\.1:\d+"):
        run(put_and_get(EtcdStore(url, tls=TLSConfig(str(certs.ca)), timeout=1), "/tls/no"))


@pytest.fixture(scope="module")
def auth_server() -> Iterator[EtcdServer]:
    """etcd with authentication on and one user, root."""
    with EtcdServer() as server:
        enable_auth(server, PASSWORD)
        yield server


@pytest.fixture
def auth_etcd(auth_server: EtcdServer) -> str:
    return auth_server.endpoint


def test_a_user_and_password_from_the_environment(
        auth_etcd: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEIR_ETCD_USER", USER)
    monkeypatch.setenv("WEIR_ETCD_PASSWORD", PASSWORD)
    assert run(put_and_get(EtcdStore(auth_etcd), "/auth/env")) == b"v"
    # A mounted Secret: the password in a file (with the newline `echo` leaves).
    (tmp_path / "password").write_text(PASSWORD + "\n")
    monkeypatch.delenv("WEIR_ETCD_PASSWORD")
    monkeypatch.setenv("WEIR_ETCD_PASSWORD_FILE", str(tmp_path / "password"))
    assert run(put_and_get(EtcdStore(auth_etcd), "/auth/file")) == b"v"


def test_a_wrong_password_names_etcd_and_the_user(
        auth_etcd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIR_ETCD_USER", USER)
    monkeypatch.setenv("WEIR_ETCD_PASSWORD", "wrong")
    with pytest.raises(StoreError) as refused:
        run(put_and_get(EtcdStore(auth_etcd), "/auth/wrong"))
    message = str(refused.value)
    assert f"etcd at {auth_etcd} refused user 'root'" in message
    assert "invalid user ID or password" in message and "WEIR_ETCD_PASSWORD" in message
    assert not isinstance(refused.value, StoreUnavailableError)


def test_no_user_says_etcd_checks_users(auth_etcd: str) -> None:
    with pytest.raises(StoreError, match="etcd checks users: set WEIR_ETCD_USER"):
        run(put_and_get(EtcdStore(auth_etcd), "/auth/none"))


def test_credentials_from_the_environment_are_checked() -> None:
    assert EtcdCredentials.from_environ({}) is None
    assert EtcdCredentials.from_environ({"WEIR_ETCD_USER": "weir", "WEIR_ETCD_PASSWORD": "p"}
                                        ) == EtcdCredentials("weir", "p")
    assert "hunter2" not in repr(EtcdCredentials("weir", "hunter2"))
    with pytest.raises(ValueError, match="etcd user 'weir' needs a password"):
        EtcdCredentials.from_environ({"WEIR_ETCD_USER": "weir"})
    with pytest.raises(ValueError, match="WEIR_ETCD_USER is not"):
        EtcdCredentials.from_environ({"WEIR_ETCD_PASSWORD": "p"})
    with pytest.raises(StoreError, match="cannot read the password of etcd user 'weir'"):
        EtcdCredentials("weir", password_file="/nonexistent/password").secret()


def test_a_restarted_etcd_forgets_tokens_and_the_next_call_authenticates_again(
        auth_server: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIR_ETCD_USER", USER)
    monkeypatch.setenv("WEIR_ETCD_PASSWORD", PASSWORD)

    async def across_a_restart() -> tuple[bytes | None, list[str]]:
        store = EtcdStore(auth_server.endpoint, timeout=2)
        seen: list[str] = []
        got = asyncio.Event()

        async def watch(start_revision: int) -> None:
            async for event in store.watch_prefix("/auth/watched/", start_revision):
                seen.append(event.key)
                got.set()

        revision = await store.put("/auth/restart", b"kept")
        # From a revision before the restart: a watch that starts late misses nothing.
        watcher = asyncio.create_task(watch(revision + 1))
        try:
            await asyncio.to_thread(auth_server.restart)
            kv = await store.get("/auth/restart")  # refused for its token, then read again
            # The watch resumes too, with a new token, and a write after the restart (a
            # write is not retried here: the caller's loop redoes it) goes through.
            for _ in range(50):
                try:
                    await store.put("/auth/watched/after", b"1")
                    break
                except StoreUnavailableError:
                    await asyncio.sleep(0.1)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(got.wait(), 10)
            return (kv.value if kv else None), seen
        finally:
            watcher.cancel()
            await store.close()

    value, seen = run(across_a_restart())
    assert value == b"kept" and seen == ["/auth/watched/after"]
