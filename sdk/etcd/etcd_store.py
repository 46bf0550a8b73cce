"""The etcd store: the one door between Weir and a real etcd.

:class:`EtcdStore` implements :class:`~weir.etcd.store.Store`, the interface the rest of
Weir is written against (its in-process twin is :mod:`weir.etcd.memory_store`).

Why aetcd, and what this module adds
------------------------------------
Weir's durable state (goal configs, their history, the leader lease, replica records)
lives in etcd. The client is ``aetcd`` 1.0.0: asyncio-native, and the only maintained
heir of python-etcd3 that imports beside protobuf >= 4 (``etcd3`` cannot, ``etcd3aio``
retries non-idempotent calls and cannot be imported beside aetcd). aetcd is a thin
wrapper over etcd's gRPC API; what a control plane needs on top of it lives here:

* **Several endpoints.** aetcd dials one ``host:port``. Given several endpoints we dial a
  gRPC multi-address target (``ipv4:a:1,b:2,c:3``) with the ``round_robin`` policy, so a
  dead member is skipped by gRPC itself; the write gap of an etcd leader kill is then the
  election (1-1.6 s) plus one call timeout.
* **Short call timeouts** (1 s by default) so a call stuck on a dead member fails fast
  and the caller's next attempt lands elsewhere; keepalive pings are 10 s apart because
  etcd answers pings closer than 5 s with GOAWAY ``too_many_pings``; reconnect backoff
  is capped at 2 s so a member coming back is used at once.
* **A lease keep-alive task** (aetcd has none): refresh every TTL/3, and report the lease
  lost when no refresh succeeded for a whole TTL, i.e. no later than etcd expires it.
* **A watch that survives failures.** aetcd's watch ends with an error when the stream
  breaks; :meth:`EtcdStore.watch_prefix` resumes from the last revision seen + 1, and turns
  a compaction into a ``"reset"`` event telling the consumer to re-read.
* **Reads at a revision** (config history) and **multi-key guarded commits**, built from
  etcd's own requests where aetcd has no helper.
* **TLS**, by replacing aetcd's ``connect()``, which only makes insecure channels.
* **Errors as values users act on**: every aetcd and gRPC failure becomes a
  :class:`~weir.etcd.store.StoreError` naming etcd and its endpoints, and a
  :class:`~weir.etcd.store.StoreUnavailableError` tells whether it looks like a passing
  failover or like no member answering at all. No aetcd type leaves this module.

Writes are never retried here: after a timeout a write may or may not have been applied,
and only the caller (a level-triggered reconcile loop) knows whether re-doing it is safe.
Reads are retried once when the connection failed, since a read is always safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aetcd
import aetcd.rpc
import aetcd.utils
import aetcd.watcher
import grpc
import grpc.aio
import structlog

from weir.backoff import Backoff
from weir.etcd.store import (
    KeyValue,
    Lease,
    Store,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    WatchEvent,
)

__all__ = ["EtcdStore", "TLSConfig", "parse_endpoints"]

log = structlog.get_logger("weir.etcd.etcd_store")

# etcd refuses pings closer than its --grpc-keepalive-min-time (5 s) with GOAWAY.
_KEEPALIVE_TIME_MS = 10_000
_KEEPALIVE_TIMEOUT_MS = 5_000
_INITIAL_RECONNECT_BACKOFF_MS = 200
_MAX_RECONNECT_BACKOFF_MS = 2_000
_REQUIRE_LEADER = (("hasleader", "true"),)
_REFRESH_RETRY = 0.2
_WATCH_BACKOFF_MIN = 0.1
_WATCH_BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class TLSConfig:
    """TLS towards etcd: a CA bundle (system roots if ``None``) and, for mutual TLS,
    a client certificate and key (both PEM files)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "TLSConfig needs both cert_file and key_file for a client certificate, "
                f"or neither (got cert_file={self.cert_file!r}, key_file={self.key_file!r})"
            )

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the PEM files and build gRPC channel credentials (blocking file reads)."""

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise StoreError(f"cannot read TLS file for etcd: {exc}") from exc

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[list[tuple[str, int]], bool]:
    """Split ``"h1:p1,http://h2:p2"`` (or a list of such) into ``(host, port)`` pairs.

    Returns the pairs and whether any endpoint asked for TLS (``https://``).
    """
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
    if not parts:
        raise ValueError("no etcd endpoint given; expected 'host:port' (comma-separated)")
    pairs: list[tuple[str, int]] = []
    secure = False
    for part in parts:
        rest = part
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
            if scheme not in ("http", "https"):
                raise ValueError(f"etcd endpoint {part!r}: scheme must be http or https")
            secure = secure or scheme == "https"
        rest = rest.rstrip("/")
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ValueError(f"etcd endpoint {part!r} is not 'host:port'")
        pairs.append((host.strip("[]"), int(port_text)))
    return pairs, secure


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _multi_target(addresses: Sequence[tuple[str, int]]) -> str:
    """A gRPC ``ipv4:``/``ipv6:`` target listing every address, for round_robin."""
    families = {ipaddress.ip_address(h).version for h, _ in addresses}
    if families == {4}:
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in addresses)
    if families == {6}:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in addresses)
    raise StoreError(
        "etcd endpoints mix IPv4 and IPv6 addresses, which one gRPC channel cannot "
        f"balance over: {addresses}"
    )


class _Client(aetcd.Client):
    """aetcd's client with our channel: a multi-address target, channel options, TLS.

    aetcd builds its channel inside ``connect()`` with ``insecure_channel`` only; this
    mirrors that method (aetcd 1.0.0) but lets :class:`EtcdStore` choose the channel.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        options: dict[str, Any],
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        super().__init__(timeout=timeout, options=options)
        # etcd's "require leader" flag: a member cut off from the quorum then fails calls
        # and closes watches at once (UNAVAILABLE) instead of serving them stale or hanging,
        # so reads retry and watches resume on another member.
        self.metadata = _REQUIRE_LEADER
        self._target = target
        self._credentials = credentials
        self._shut = False

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._shut:
            # aetcd reconnects lazily on every call; a closed store must stay closed.
            raise aetcd.ConnectionFailedError("the client is closed")
        if self._credentials is not None:
            self.channel = grpc.aio.secure_channel(
                self._target, self._credentials, options=list(self._options.items())
            )
        else:
            self.channel = grpc.aio.insecure_channel(
                self._target, options=list(self._options.items())
            )
        self.kvstub = aetcd.rpc.KVStub(self.channel)
        self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
        self.leasestub = aetcd.rpc.LeaseStub(self.channel)
        self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(
            aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()

    async def close(self) -> None:
        self._shut = True
        await super().close()


class EtcdStore:
    """:class:`~weir.etcd.store.Store` over a real etcd.

    ``endpoints``: ``"host:port"``, optionally ``"http://host:port"`` (``https://``
    turns TLS on with the system roots unless ``tls`` says more), several
    comma-separated or as a list. ``timeout`` bounds every call, in seconds.

    Connecting opens a gRPC channel without contacting etcd; an unreachable etcd shows
    on the first call as :class:`StoreUnavailableError`.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 1.0,
        tls: TLSConfig | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._addresses, secure = parse_endpoints(endpoints)
        self._endpoints = [f"{_format_host(h)}:{p}" for h, p in self._addresses]
        self._timeout = timeout
        self._tls = tls if tls is not None else (TLSConfig() if secure else None)
        self._client: _Client | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        # The loop keeps only weak references to tasks: hold the keep-alives here so a
        # caller that drops the returned task does not lose its lease to the GC.
        self._keep_alives: set[asyncio.Task[None]] = set()

    @property
    def endpoints(self) -> list[str]:
        """The endpoints as ``"host:port"`` strings."""
        return list(self._endpoints)

    @property
    def timeout(self) -> float:
        """The per-call timeout in seconds."""
        return self._timeout

    def __repr__(self) -> str:
        return f"EtcdStore({','.join(self._endpoints)!r})"

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the channel to etcd (idempotent). Does not wait for etcd to answer."""
        if self._closed.is_set():
            raise StoreClosedError(f"the store for etcd at {self._where} is closed")
        async with self._connect_lock:
            if self._client is not None:
                return
            target, options = await self._channel_target()
            credentials = None
            if self._tls is not None:
                credentials = await asyncio.to_thread(self._tls.credentials)
            client = _Client(
                target, timeout=self._timeout, options=options, credentials=credentials
            )
            await client.connect()
            self._client = client

    async def _channel_target(self) -> tuple[str, dict[str, Any]]:
        options: dict[str, Any] = {
            "grpc.keepalive_time_ms": _KEEPALIVE_TIME_MS,
            "grpc.keepalive_timeout_ms": _KEEPALIVE_TIMEOUT_MS,
            "grpc.keepalive_permit_without_calls": 0,
            "grpc.initial_reconnect_backoff_ms": _INITIAL_RECONNECT_BACKOFF_MS,
            "grpc.max_reconnect_backoff_ms": _MAX_RECONNECT_BACKOFF_MS,
        }
        if len(self._addresses) == 1:
            host, port = self._addresses[0]
            return f"{_format_host(host)}:{port}", options
        resolved = [await self._resolve(host, port) for host, port in self._addresses]
        options["grpc.lb_policy_name"] = "round_robin"
        if self._tls is not None and any(
            r[0] != h for r, (h, _) in zip(resolved, self._addresses, strict=True)
        ):
            # The certificate names a host, the target only addresses: check the first name.
            options["grpc.ssl_target_name_override"] = self._addresses[0][0]
        return _multi_target(resolved), options

    async def _resolve(self, host: str, port: int) -> tuple[str, int]:
        try:
            ipaddress.ip_address(host)
            return host, port
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise StoreUnavailableError(
                f"etcd at {self._where} is unreachable: cannot resolve {host!r}: {exc}"
            ) from exc
        # One family per channel: prefer IPv4 when a name has both.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        return str(infos[0][4][0]), port

    async def close(self) -> None:
        """Close the channel; watches end, keep-alive tasks report their lease lost.

        Leases are not revoked: they expire after their TTL, as if this process died.
        """
        self._closed.set()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def __aenter__(self) -> EtcdStore:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ready(self) -> _Client:
        if self._client is None:
            await self.connect()
        assert self._client is not None
        return self._client

    @property
    def _where(self) -> str:
        return ",".join(self._endpoints)

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """Turn aetcd and gRPC failures into :class:`StoreError` naming etcd."""
        try:
            yield
        except StoreError:
            raise
        except asyncio.CancelledError:
            # grpc.aio cancels the calls in flight when the channel closes: that is the
            # store closing under the caller, not the caller being cancelled.
            if self._closed.is_set() and not _being_cancelled():
                raise StoreClosedError(
                    f"the store for etcd at {self._where} was closed during {operation}"
                ) from None
            raise
        except (aetcd.ClientError, grpc.RpcError, grpc.aio.UsageError) as exc:
            if self._closed.is_set():
                raise StoreClosedError(f"the store for etcd at {self._where} is closed") from exc
            unavailable, detail = _describe(exc, self._timeout)
            if unavailable:
                raise StoreUnavailableError(
                    f"etcd at {self._where} is unreachable: {operation} failed: {detail}",
                    failover=_in_failover(exc),
                ) from exc
            raise StoreError(f"etcd at {self._where} refused {operation}: {detail}") from exc

    async def _read(self, operation: str, call: Callable[[_Client], Any]) -> Any:
        """Run a read; if the connection failed (not timed out), try once more at once.

        With several endpoints the second try goes to another member; a read is always
        safe to repeat. A timeout is not retried so that a read never takes much longer
        than the call timeout.
        """
        for attempt in (1, 2):
            client = await self._ready()
            try:
                with self._errors(operation):
                    return await call(client)
            except StoreUnavailableError as exc:
                if attempt == 2 or self._closed.is_set() or _timed_out(exc):
                    raise
        raise AssertionError("unreachable")

    # -- keys --------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """The key's value and revisions, or ``None`` if it does not exist."""
        result = await self._read(f"get {key}", lambda c: c.get(key.encode()))
        return None if result is None else _key_value(result)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` sorted by key, and the revision of the read.

        Watching from that revision + 1 misses nothing that happened after the read.
        """
        result = await self._read(
            f"get prefix {prefix}",
            lambda c: c.get_prefix(prefix.encode(), sort_order="ascend", sort_target="key"),
        )
        return [_key_value(kv) for kv in result], int(result.header.revision)

    async def get_at_revision(self, key: str, revision: int) -> KeyValue | None:
        """The key as it was at ``revision`` (``None`` if absent then).

        Raises :class:`StoreError` if etcd compacted that revision away, or if it lies
        in the future.
        """
        request = aetcd.rpc.RangeRequest(key=key.encode(), revision=revision)
        operation = f"get {key} at revision {revision}"

        async def call(client: _Client) -> Any:
            return await client.kvstub.Range(
                request, timeout=self._timeout, metadata=client.metadata
            )

        try:
            response = await self._read(operation, call)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and (
                cause.code() == grpc.StatusCode.OUT_OF_RANGE
            ):
                details = str(cause.details())
                hint = (
                    "etcd keeps history only back to its last compaction"
                    if "compacted" in details
                    else "that revision does not exist yet"
                )
                raise StoreError(
                    f"etcd at {self._where} cannot {operation}: {details} ({hint})"
                ) from cause
            raise
        if not response.kvs:
            return None
        return _key_value(response.kvs[0])

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value`` (bound to ``lease`` if given); return the new revision."""
        client = await self._ready()
        with self._errors(f"put {key}"):
            result = await client.put(key.encode(), value, lease=_lease_id(lease))
        return int(result.header.revision)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        client = await self._ready()
        with self._errors(f"delete {key}"):
            result = await client.delete(key.encode())
        return result is not None

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; return how many there were."""
        client = await self._ready()
        with self._errors(f"delete prefix {prefix}"):
            result = await client.delete_prefix(prefix.encode())
        return int(result.deleted)

    async def create_if_absent(self, key: str, value: bytes, *, lease: Lease | None = None) -> bool:
        """Create ``key`` only if it does not exist (one transaction on create_revision 0).

        Returns whether this call created it.
        """
        client = await self._ready()
        tx = client.transactions
        with self._errors(f"create {key}"):
            succeeded, _ = await client.transaction(
                compare=[tx.create(key.encode()) == 0],
                success=[tx.put(key.encode(), value, lease=_lease_id(lease))],
                failure=[],
            )
        return bool(succeeded)

    async def commit(
        self,
        *,
        puts: Mapping[str, bytes] = {},
        deletes: Sequence[str] = (),
        expect_mod_revision: Mapping[str, int] = {},
    ) -> int | None:
        """Apply ``puts`` and ``deletes`` in one transaction if every guard holds.

        ``expect_mod_revision[key] == n`` guards on the key's mod_revision being ``n``;
        ``n == 0`` means the key must be absent. Returns the new revision, or ``None``
        (and changes nothing) if a guard failed.
        """
        overlap = set(puts) & set(deletes)
        if overlap:
            raise ValueError(f"commit both puts and deletes {sorted(overlap)}; etcd refuses that")
        rpc = aetcd.rpc
        # Built from etcd's messages: aetcd's transaction() hides the response header,
        # and with it the revision we return.
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=k.encode(),
                    target=rpc.Compare.MOD,
                    result=rpc.Compare.EQUAL,
                    mod_revision=int(n),
                )
                for k, n in expect_mod_revision.items()
            ],
            success=[
                *(
                    rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=v))
                    for k, v in puts.items()
                ),
                *(
                    rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k.encode()))
                    for k in deletes
                ),
            ],
        )
        keys = sorted({*puts, *deletes})
        client = await self._ready()
        with self._errors(f"commit {', '.join(keys) or '(guards only)'}"):
            response = await client.kvstub.Txn(
                request, timeout=self._timeout, metadata=client.metadata
            )
        return int(response.header.revision) if response.succeeded else None

    # -- leases ------------------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> Lease:
        """A new lease of ``ttl`` seconds (rounded up; etcd may raise it to its minimum)."""
        seconds = max(1, math.ceil(ttl))
        client = await self._ready()
        with self._errors(f"grant a {seconds} s lease"):
            granted = await client.lease(seconds)
        return Lease(id=int(granted.id), ttl=int(granted.ttl))

    async def revoke_lease(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. A lease already gone is no error."""
        client = await self._ready()
        try:
            with self._errors(f"revoke lease {lease.id:x}"):
                await client.revoke_lease(lease.id)
        except StoreError as exc:
            if "lease not found" not in str(exc):
                raise

    def keep_alive(self, lease: Lease, on_lost: Callable[[], None]) -> asyncio.Task[None]:
        """Refresh ``lease`` every TTL/3 in a task of the running loop.

        If no refresh succeeded for a whole TTL (etcd away), or etcd says the lease is
        gone, ``on_lost()`` is called once and the task ends. Cancel the task to stop
        refreshing (the lease then expires after its TTL).
        """
        task = asyncio.get_running_loop().create_task(
            self._keep_alive(lease, on_lost), name=f"weir-lease-keepalive-{lease.id:x}"
        )
        self._keep_alives.add(task)
        task.add_done_callback(self._keep_alives.discard)
        return task

    async def _keep_alive(self, lease: Lease, on_lost: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        interval = lease.ttl / 3
        # Measured from when a refresh was *sent*: etcd restarts the TTL no earlier than
        # that, so giving up at last_ok + ttl is never later than etcd's expiry.
        last_ok = loop.time()
        failures = 0
        reason = ""
        while True:
            remaining = last_ok + lease.ttl - loop.time()
            if remaining <= 0:
                reason = f"no refresh succeeded for {lease.ttl} s"
                break
            sent = loop.time()
            try:
                ttl_left = await self._refresh(lease, timeout=min(self._timeout, remaining))
            except StoreError as exc:
                if self._closed.is_set():
                    reason = "the store was closed"
                    break
                failures += 1
                # The first failure is news; the retries every 0.2 s that follow are not.
                (log.warning if failures == 1 else log.debug)(
                    "lease refresh failed", lease=f"{lease.id:x}", error=str(exc)
                )
                await asyncio.sleep(min(interval, _REFRESH_RETRY))
                continue
            if failures:
                log.info("lease refresh recovered", lease=f"{lease.id:x}", failures=failures)
                failures = 0
            if ttl_left <= 0:
                reason = "etcd says the lease expired"
                break
            last_ok = sent
            await asyncio.sleep(interval)
        log.warning("lease lost", lease=f"{lease.id:x}", reason=reason)
        try:
            on_lost()
        except Exception:
            log.exception("on_lost callback failed", lease=f"{lease.id:x}")

    async def _refresh(self, lease: Lease, timeout: float) -> int:
        client = await self._ready()
        with self._errors(f"refresh lease {lease.id:x}"):
            request = aetcd.rpc.LeaseKeepAliveRequest(ID=lease.id)
            call = client.leasestub.LeaseKeepAlive(
                iter([request]), timeout=timeout, metadata=client.metadata
            )
            async for reply in call:
                call.cancel()
                return int(reply.TTL)
        raise StoreUnavailableError(
            f"etcd at {self._where} is unreachable: lease {lease.id:x} refresh got no reply",
            failover=True,
        )

    # -- watches -----------------------------------------------------------------------------

    async def watch_prefix(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` (default: now on).

        Survives etcd going away: it retries with a small backoff and resumes from the
        last revision seen + 1, so no event is lost or repeated. If that history was
        compacted it yields a ``"reset"`` event and goes on from the current revision.
        Ends when the store is closed.
        """
        key = prefix.encode()
        next_revision = start_revision
        backoff = Backoff(_WATCH_BACKOFF_MIN, _WATCH_BACKOFF_MAX)
        while not self._closed.is_set():
            watch = None
            try:
                if next_revision is None:
                    # Pin "now" to a revision so a reconnect cannot skip events.
                    next_revision = await self._current_revision(prefix) + 1
                client = await self._ready()
                with self._errors(f"watch {prefix}"):
                    watch = await client.watch_prefix(key, start_revision=next_revision)
                    if _being_cancelled():
                        # Python 3.11's wait_for (inside aetcd) can swallow a cancel that
                        # lands as the watch is created; honour it, or the caller hangs.
                        raise asyncio.CancelledError
                    async for event in watch:
                        backoff.reset()
                        revision = int(event.kv.mod_revision)
                        next_revision = revision + 1
                        yield WatchEvent(
                            kind="put" if event.kind == "PUT" else "delete",
                            key=event.kv.key.decode(),
                            value=bytes(event.kv.value),
                            revision=revision,
                        )
            except StoreError as exc:
                if self._closed.is_set():
                    return
                compacted = _compacted(exc)
                if compacted:
                    current = await self._current_revision_retrying(prefix)
                    if current is None:
                        return
                    log.warning(
                        "watch history compacted; consumer must re-read",
                        prefix=prefix,
                        wanted=next_revision,
                        current=current,
                    )
                    next_revision = current + 1
                    yield WatchEvent(kind="reset", key=prefix, value=b"", revision=current)
                    continue
                # The first interruption is news; the retries while etcd is away are not.
                (log.info if backoff.failures == 0 else log.debug)(
                    "watch interrupted; resuming",
                    prefix=prefix,
                    from_revision=next_revision,
                    error=str(exc),
                )
                if await self._sleep_unless_closed(backoff.next()):
                    return
                continue
            finally:
                if watch is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(watch.cancel(), self._timeout)
            # The stream ended without an error: the store is closing, or aetcd dropped it.
            if self._closed.is_set():
                return
            if await self._sleep_unless_closed(backoff.next()):
                return

    async def _current_revision(self, prefix: str) -> int:
        request = aetcd.rpc.RangeRequest(key=prefix.encode(), limit=1, keys_only=True)

        async def call(client: _Client) -> Any:
            return await client.kvstub.Range(
                request, timeout=self._timeout, metadata=client.metadata
            )

        response = await self._read(f"read revision of {prefix}", call)
        return int(response.header.revision)

    async def _current_revision_retrying(self, prefix: str) -> int | None:
        backoff = Backoff(_WATCH_BACKOFF_MIN, _WATCH_BACKOFF_MAX)
        while not self._closed.is_set():
            try:
                return await self._current_revision(prefix)
            except StoreError:
                if await self._sleep_unless_closed(backoff.next()):
                    return None
        return None

    async def _sleep_unless_closed(self, seconds: float) -> bool:
        """Sleep ``seconds``; return ``True`` at once if the store gets closed."""
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        if _being_cancelled():
            raise asyncio.CancelledError  # see the note in watch_prefix
        return True


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key).decode(),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
        lease=int(getattr(kv, "lease", 0) or 0),
        version=int(kv.version),
    )


def _lease_id(lease: Lease | None) -> int | None:
    return None if lease is None else lease.id


def _compacted(exc: StoreError) -> bool:
    return isinstance(exc.__cause__, aetcd.RevisionCompactedError)


_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _rpc_error(exc: BaseException) -> grpc.aio.AioRpcError | None:
    """The gRPC error behind an aetcd or gRPC exception, if there is one."""
    while exc is not None:
        if isinstance(exc, grpc.aio.AioRpcError):
            return exc
        exc = exc.__cause__  # type: ignore[assignment]
    return None


def _describe(exc: BaseException, timeout: float) -> tuple[bool, str]:
    """Whether ``exc`` means etcd is unreachable (or leaderless), and a readable detail."""
    rpc_error = _rpc_error(exc)
    if rpc_error is not None:
        code = rpc_error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return True, f"no answer within {timeout:g} s"
        return code in _UNAVAILABLE_CODES, str(rpc_error.details() or code.name)
    if isinstance(exc, aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError):
        return True, f"no answer within {timeout:g} s"
    if isinstance(exc, aetcd.ConnectionFailedError | grpc.aio.UsageError):
        return True, str(exc) or type(exc).__name__
    return False, str(exc) or type(exc).__name__


def _being_cancelled() -> bool:
    """Whether the current task was asked to cancel (Python 3.11+ can tell)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling() > 0)


def _in_failover(exc: BaseException) -> bool:
    """Whether an aetcd or gRPC failure looks like etcd failing over, which passes in a
    second or two: a call timed out, a member said it has no leader, or the connection to
    one member broke (it died under the call; the client moves to another). Not when no
    member can be reached at all, which a caller should report at once."""
    if _timed_out(exc):
        return True
    rpc_error = _rpc_error(exc)
    details = (rpc_error.details() or "") if rpc_error is not None else str(exc)
    return not any(marker in details for marker in _NOTHING_REACHABLE)


#: What gRPC says when no endpoint at all accepts a connection.
_NOTHING_REACHABLE = ("failed to connect to all addresses", "connections to all backends failing")


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc``, or the failure behind it, is a call that got no answer in time."""
    rpc_error = _rpc_error(exc)
    if rpc_error is not None:
        return bool(rpc_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError):
            return True
        cause = cause.__cause__
    return False


if TYPE_CHECKING:
    # mypy holds the class to the interface here, not only where one is passed as a Store.
    _IS_A_STORE: type[Store] = EtcdStore
