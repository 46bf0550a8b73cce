"""weir.etcd.etcd_store against real etcd: what only the real store does (endpoints, TLS,
errors naming etcd, keep-alive and watches across etcd restarts, failover).

The semantics both stores share are in test_store_contract.py; these tests remain here too
since they also exercise the etcd client paths behind each call.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from weir.etcd.endpoints import TLSConfig
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.server import EtcdCluster, EtcdServer
from weir.etcd.store import (
    KeyValue,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    WatchEvent,
    in_failover,
)
from weir.processes import free_port

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    """Run one test body on a fresh event loop, bounded so a hang fails instead."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float,
    what: str,
) -> float:
    """Poll ``check`` until true; return how long it took, fail after ``timeout``."""
    start = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def compact(endpoint: str, revision: int) -> None:
    """Compact etcd's history through its JSON gateway (Weir itself never compacts)."""
    request = urllib.request.Request(
        f"http://{endpoint}/v3/kv/compaction",
        data=json.dumps({"revision": revision, "physical": True}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=2):
        pass


class Collector:
    """Drains a watch into a list in a background task."""

    def __init__(self, store: Store, prefix: str, start_revision: int | None = None) -> None:
        self.events: list[WatchEvent] = []
        self.done = False
        self._source = store.watch_prefix(prefix, start_revision)
        self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        async for event in self._source:
            self.events.append(event)
        self.done = True

    def summary(self) -> list[tuple[str, str, bytes]]:
        return [(e.kind, e.key, e.value) for e in self.events]


# -- keys ------------------------------------------------------------------------------------


def test_put_get_delete(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            assert await store.get("/app/a") is None
            revision = await store.put("/app/a", b"1")
            kv = await store.get("/app/a")
            assert kv == KeyValue("/app/a", b"1", revision, revision)
            later = await store.put("/app/a", b"2")
            assert later > revision
            kv = await store.get("/app/a")
            assert kv is not None
            assert (kv.value, kv.mod_revision, kv.create_revision) == (b"2", later, revision)
            assert await store.delete("/app/a") is True
            assert await store.delete("/app/a") is False
            assert await store.get("/app/a") is None

    run(body())


def test_get_prefix_is_sorted_and_carries_the_read_revision(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            for key in ("/app/c", "/app/a", "/app/b", "/apple", "/other"):
                last = await store.put(key, key.encode())
            items, revision = await store.get_prefix("/app/")
            assert [kv.key for kv in items] == ["/app/a", "/app/b", "/app/c"]
            assert revision == last
            assert await store.delete_prefix("/app/") == 3
            assert (await store.get_prefix("/app/"))[0] == []
            assert await store.get("/apple") is not None

    run(body())


def test_commit_applies_everything_when_guards_hold(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            rev_a = await store.put("/g/a", b"a1")
            await store.put("/g/gone", b"x")
            revision = await store.commit(
                puts={"/g/a": b"a2", "/g/new": b"n"},
                deletes=["/g/gone"],
                expect_mod_revision={"/g/a": rev_a, "/g/new": 0},
            )
            assert revision is not None and revision > rev_a
            items, _ = await store.get_prefix("/g/")
            assert [(kv.key, kv.value) for kv in items] == [("/g/a", b"a2"), ("/g/new", b"n")]
            # One transaction, one revision for every write in it.
            assert {kv.mod_revision for kv in items} == {revision}

    run(body())


def test_commit_changes_nothing_when_a_guard_fails(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            rev_a = await store.put("/g/a", b"a1")
            await store.put("/g/a", b"someone else")
            stale = await store.commit(
                puts={"/g/a": b"mine", "/g/b": b"b"}, expect_mod_revision={"/g/a": rev_a}
            )
            assert stale is None
            present = await store.commit(puts={"/g/b": b"b"}, expect_mod_revision={"/g/a": 0})
            assert present is None
            items, _ = await store.get_prefix("/g/")
            assert [(kv.key, kv.value) for kv in items] == [("/g/a", b"someone else")]
            with pytest.raises(ValueError, match="both puts and deletes"):
                await store.commit(puts={"/g/a": b"x"}, deletes=["/g/a"])

    run(body())


def test_create_if_absent_has_exactly_one_winner(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        stores = [EtcdStore(etcd_server.endpoint) for _ in range(3)]
        try:
            results = await asyncio.gather(
                *(
                    stores[i % 3].create_if_absent("/race", f"candidate-{i}".encode())
                    for i in range(12)
                )
            )
            assert results.count(True) == 1
            winner = results.index(True)
            kv = await stores[0].get("/race")
            assert kv is not None and kv.value == f"candidate-{winner}".encode()
        finally:
            for store in stores:
                await store.close()

    run(body())


def test_get_at_revision_reads_history(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            first = await store.put("/cfg", b"v1")
            second = await store.put("/cfg", b"v2")
            await store.delete("/cfg")
            at_first = await store.get_at_revision("/cfg", first)
            assert at_first is not None and at_first.value == b"v1"
            at_second = await store.get_at_revision("/cfg", second)
            assert at_second is not None and at_second.value == b"v2"
            assert await store.get_at_revision("/cfg", first - 1) is None
            with pytest.raises(StoreError, match="future revision"):
                await store.get_at_revision("/cfg", second + 100)
            compact(etcd_server.endpoint, second)
            with pytest.raises(StoreError, match="compacted") as info:
                await store.get_at_revision("/cfg", first)
            assert etcd_server.endpoint in str(info.value)

    run(body())


def test_errors_name_etcd_and_its_endpoints() -> None:
    endpoint = f"127.0.0.1:{free_port()}"

    async def body() -> None:
        store = EtcdStore(endpoint, timeout=0.5)
        with pytest.raises(StoreUnavailableError) as info:
            await store.put("/k", b"v")
        assert str(info.value).startswith(f"etcd at {endpoint} is unreachable: put /k failed")
        assert not in_failover(info.value)  # nothing listens: no failover to wait out
        await store.close()
        with pytest.raises(StoreClosedError, match="closed"):
            await store.get("/k")

    run(body())


# -- leases ----------------------------------------------------------------------------------


def test_lease_expiry_deletes_its_keys(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            lease = await store.grant_lease(0.2)
            assert lease.ttl >= 1  # rounded up; etcd may raise it to its minimum
            await store.put("/leased", b"x", lease=lease)
            assert await store.create_if_absent("/leased2", b"y", lease=lease)

            async def gone() -> bool:
                return await store.get("/leased") is None and await store.get("/leased2") is None

            await eventually(gone, lease.ttl + 2, "leased keys deleted at expiry")

    run(body())


def test_revoke_deletes_keys_at_once_and_twice_is_fine(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            lease = await store.grant_lease(30)
            await store.put("/leased", b"x", lease=lease)
            await store.revoke_lease(lease)
            assert await store.get("/leased") is None
            await store.revoke_lease(lease)

    run(body())


def test_keep_alive_outlives_the_ttl_and_reports_loss_when_etcd_dies(
    etcd_server: EtcdServer,
) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            lease = await store.grant_lease(2)
            await store.put("/alive", b"x", lease=lease)
            lost: list[float] = []
            task = store.keep_alive(lease, lambda: lost.append(time.monotonic()))
            # Holding on is the behaviour under test: wait out more than one TTL, with this
            # loop blocked all along (as by a long reconcile pass): the refreshes run apart.
            await asyncio.sleep(0.1)
            time.sleep(lease.ttl + 1)  # noqa: ASYNC251 (blocking is the point)
            assert await store.get("/alive") is not None
            assert not lost and not task.done()

            killed = time.monotonic()
            await asyncio.to_thread(etcd_server.kill)
            await eventually(lambda: bool(lost), lease.ttl + 1, "on_lost called")
            assert lost[0] - killed <= lease.ttl + 0.5
            await asyncio.wait_for(task, 1)
            assert len(lost) == 1

    run(body())


def test_keep_alive_reports_a_revoked_lease_at_once(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            lease = await store.grant_lease(3)
            lost = asyncio.Event()
            task = store.keep_alive(lease, lost.set)
            await store.revoke_lease(lease)
            await asyncio.wait_for(lost.wait(), 2)  # the next refresh, ttl/3 away
            await asyncio.wait_for(task, 1)

    run(body())


# -- watches ---------------------------------------------------------------------------------


def test_watch_sees_puts_and_deletes_under_the_prefix(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await store.put("/w/before", b"0")
            watch = Collector(store, "/w/")  # from "now", whenever its task starts

            async def registered() -> bool:
                await store.put("/w/probe", b"")
                return bool(watch.events)

            await eventually(registered, 3, "the watch to see a probe write")
            await store.put("/w/a", b"1")
            await store.put("/elsewhere", b"x")
            await store.commit(puts={"/w/b": b"2"}, deletes=["/w/before"])
            await store.delete("/w/a")

            def changes() -> list[WatchEvent]:
                return [e for e in watch.events if e.key != "/w/probe"]

            await eventually(lambda: len(changes()) >= 4, 3, "four events")
            events = changes()
            assert [(e.kind, e.key, e.value) for e in events] == [
                ("put", "/w/a", b"1"),
                ("put", "/w/b", b"2"),
                ("delete", "/w/before", b""),
                ("delete", "/w/a", b""),
            ]
            revisions = [e.revision for e in events]
            assert revisions[1] == revisions[2] and revisions == sorted(revisions)
        await asyncio.wait_for(watch.task, 2)  # closing the store ends the watch
        assert watch.done

    run(body())


def test_watch_from_a_revision_replays_history(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            first = await store.put("/w/a", b"1")
            await store.put("/w/a", b"2")
            watch = Collector(store, "/w/", start_revision=first)
            await eventually(lambda: len(watch.events) == 2, 3, "history replayed")
            assert [e.value for e in watch.events] == [b"1", b"2"]

    run(body())


def test_watch_resumes_where_it_stopped_after_etcd_restarts(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with (
            EtcdStore(etcd_server.endpoint) as store,
            EtcdStore(etcd_server.endpoint) as writer,
        ):
            _, revision = await store.get_prefix("/w/")
            watch = Collector(store, "/w/", start_revision=revision + 1)
            await writer.put("/w/a", b"before")
            await eventually(lambda: len(watch.events) == 1, 3, "first event")

            await asyncio.to_thread(etcd_server.kill)
            await asyncio.to_thread(etcd_server.start)
            # Written before the watch can have reconnected: only resuming from the
            # last revision seen, not from "now", delivers them.
            await writer.put("/w/b", b"after")
            await writer.delete("/w/a")
            await eventually(lambda: len(watch.events) >= 3, 5, "events after restart")
            await writer.put("/w/end", b"")
            await eventually(lambda: watch.events[-1].key == "/w/end", 3, "the end marker")
            assert watch.summary()[:-1] == [
                ("put", "/w/a", b"before"),
                ("put", "/w/b", b"after"),
                ("delete", "/w/a", b""),
            ]

    run(body())


def test_watch_signals_reset_when_history_was_compacted(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            first = await store.put("/w/a", b"1")
            last = await store.put("/w/a", b"2")
            compact(etcd_server.endpoint, last)
            watch = Collector(store, "/w/", start_revision=first)
            await eventually(lambda: len(watch.events) == 1, 5, "reset event")
            assert watch.events[0].kind == "reset"
            assert watch.events[0].revision >= last
            await store.put("/w/b", b"3")
            await eventually(lambda: len(watch.events) == 2, 3, "event after reset")
            assert watch.summary()[1] == ("put", "/w/b", b"3")

    run(body())


# -- several endpoints -----------------------------------------------------------------------


def test_writes_go_on_when_one_member_of_three_dies(etcd_cluster: EtcdCluster) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_cluster.endpoints) as store:
            await store.put("/k", b"0")
            leader = await asyncio.to_thread(_leader_index, etcd_cluster)
            killed = time.monotonic()
            # The leader is the hard case: the others must elect a new one first.
            await asyncio.to_thread(etcd_cluster.members[leader].kill)

            async def write() -> bool:
                try:
                    await store.put("/k", b"1")
                except StoreUnavailableError:
                    return False
                return True

            await eventually(write, 3, "a write after killing the etcd leader")
            assert time.monotonic() - killed < 3.5
            kv = await store.get("/k")
            assert kv is not None and kv.value == b"1"

    run(body())


def _leader_index(cluster: EtcdCluster) -> int:
    statuses = []
    for member in cluster.members:
        request = urllib.request.Request(
            f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            statuses.append(json.loads(response.read()))
    leader = statuses[0]["leader"]
    return next(i for i, s in enumerate(statuses) if s["header"]["member_id"] == leader)


# -- TLS -------------------------------------------------------------------------------------


def test_tls_config_builds_credentials_and_a_secure_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_bytes(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    tls = TLSConfig(
        ca_file=str(tmp_path / "ca.pem"),
        cert_file=str(tmp_path / "cert.pem"),
        key_file=str(tmp_path / "key.pem"),
    )
    assert isinstance(tls.credentials(), grpc.ChannelCredentials)
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        TLSConfig(cert_file=str(tmp_path / "cert.pem"))
    with pytest.raises(StoreError, match="cannot read TLS file"):
        TLSConfig(ca_file=str(tmp_path / "missing.pem")).credentials()

    secure_targets: list[str] = []
    real_secure_channel = grpc.aio.secure_channel

    def spy(target: str, credentials: grpc.ChannelCredentials, **kwargs: Any) -> Any:
        secure_targets.append(target)
        return real_secure_channel(target, credentials, **kwargs)

    monkeypatch.setattr(grpc.aio, "secure_channel", spy)

    async def body() -> None:
        for store in (EtcdStore("127.0.0.1:1", tls=tls), EtcdStore("https://127.0.0.1:2")):
            await store.connect()
            await store.close()

    run(body())
    assert secure_targets == ["127.0.0.1:1", "127.0.0.1:2"]


def test_in_failover_tells_a_passing_failure_from_etcd_gone() -> None:
    where = "etcd at 127.0.0.1:1 is unreachable: commit /k failed: "
    assert in_failover(StoreUnavailableError(where + "no leader", failover=True))
    assert not in_failover(StoreUnavailableError(where + "connection refused"))
    assert not in_failover(StoreError("etcd at 127.0.0.1:1 refused put /k: bad request"))
    assert not in_failover(StoreClosedError("the store for etcd at 127.0.0.1:1 is closed"))
