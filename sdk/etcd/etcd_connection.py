"""One connection to etcd: the aetcd client on our channel, opened lazily, closed for good.

:class:`EtcdConnection` is what the parts of :class:`~weir.etcd.etcd_store.EtcdStore`
(its keys, the lease keep-alive in :mod:`weir.etcd.etcd_keep_alive`, the watch in
:mod:`weir.etcd.etcd_watch`) share: the client, the call timeout, the endpoints named in
errors, and whether the store was closed.

* **Our channel.** aetcd builds an insecure channel to one ``host:port`` inside its
  ``connect()``; :class:`EtcdClient` replaces that method to dial the target and options of
  :func:`~weir.etcd.endpoints.channel_target`, with TLS when asked.
* **Credentials.** With an etcd user (:class:`~weir.etcd.endpoints.EtcdCredentials`, from
  the environment unless given) the first call authenticates and every call after carries
  the token etcd gave. etcd forgets tokens when it restarts (and after
  ``--auth-token-ttl`` unused): a call refused for an invalid token drops it, so the next
  call authenticates again; a read is retried at once. A wrong password is a
  :class:`~weir.etcd.store.StoreError` naming etcd and the user.
* **Errors as values users act on**: :meth:`EtcdConnection.errors` turns every aetcd and
  gRPC failure into a :class:`~weir.etcd.store.StoreError` naming etcd and its endpoints
  (the rules are in :mod:`weir.etcd.etcd_failures`).

Writes are never retried here: after a timeout a write may or may not have been applied,
and only the caller (a level-triggered reconcile loop) knows whether re-doing it is safe.
Reads are retried once when the connection failed, since a read is always safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aetcd
import aetcd.rpc
import aetcd.watcher
import grpc
import grpc.aio

from weir.cancellation import within
from weir.etcd.endpoints import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    USER_ENV,
    EtcdCredentials,
    TLSConfig,
    channel_target,
    endpoint,
)
from weir.etcd.etcd_failures import (
    being_cancelled,
    describe,
    looks_like_failover,
    rpc_error,
    timed_out,
)
from weir.etcd.store import StoreClosedError, StoreError, StoreUnavailableError

__all__ = ["EtcdClient", "EtcdConnection"]

_REQUIRE_LEADER: tuple[tuple[str, str], ...] = (("hasleader", "true"),)


class EtcdClient(aetcd.Client):
    """aetcd's client with our channel: a multi-address target, channel options, TLS.

    aetcd builds its channel inside ``connect()`` with ``insecure_channel`` only; this
    mirrors that method (aetcd 1.0.0) but lets :class:`EtcdConnection` choose the channel.
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
        #: The auth token calls carry: None until authenticated ("" where etcd has
        #: authentication off).
        self.token: str | None = None
        self._authenticated = False

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
        self.auth_stub = aetcd.rpc.AuthStub(self.channel)
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

    async def use_token(self, token: str) -> None:
        """Carry `token` in every call from now on ("": none, etcd checks no users)."""
        renewed, self._authenticated = self._authenticated, True
        self.token = token
        self.metadata = ((("token", token), *_REQUIRE_LEADER) if token else _REQUIRE_LEADER)
        if self._watcher is not None:
            self._watcher._metadata = self.metadata  # new watch streams carry it too
            if renewed:
                # etcd checks a watch stream's token when the stream opens, and answers a
                # watch created on a stream with a dead token by a cancel aetcd never
                # delivers (the create times out): end the stream; watches resume on a new one.
                await self._watcher.shutdown()

    def forget_token(self) -> None:
        """Authenticate again before the next call (etcd refused the token)."""
        self.token = None


class EtcdConnection:
    """The channel to etcd at ``addresses``, opened on first use and closed once for good.

    ``timeout`` bounds every call, in seconds; ``tls`` makes the channel secure;
    ``credentials`` name the etcd user (default: the one the environment names, if any).
    """

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        *,
        timeout: float,
        tls: TLSConfig | None,
        credentials: EtcdCredentials | None = None,
    ) -> None:
        self._addresses = list(addresses)
        self._tls = tls
        self._credentials = credentials or EtcdCredentials.from_environ()
        self.timeout = timeout
        #: The endpoints as ``"host:port"`` strings.
        self.endpoints = [endpoint(h, p) for h, p in self._addresses]
        #: The endpoints as errors name them.
        self.where = ",".join(self.endpoints)
        self._client: EtcdClient | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return once :meth:`close` was called."""
        await self._closed.wait()

    def twin(self) -> EtcdConnection:
        """A new connection to the same endpoints with the same TLS and user, not opened
        yet (for a thread with an event loop of its own: a connection serves one loop)."""
        return EtcdConnection(self._addresses, timeout=self.timeout, tls=self._tls,
                              credentials=self._credentials)

    async def connect(self) -> None:
        """Open the channel to etcd (idempotent). Does not wait for etcd to answer."""
        if self._closed.is_set():
            raise StoreClosedError(f"the store for etcd at {self.where} is closed")
        async with self._connect_lock:
            if self._client is not None:
                return
            target, options = await channel_target(self._addresses, tls=self._tls is not None)
            credentials = None
            if self._tls is not None:
                credentials = await asyncio.to_thread(self._tls.credentials)
            client = EtcdClient(
                target, timeout=self.timeout, options=options, credentials=credentials
            )
            await client.connect()
            self._client = client

    async def close(self) -> None:
        """Close the channel for good; calls in flight fail with ``StoreClosedError``."""
        self._closed.set()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def ready(self) -> EtcdClient:
        """The client, connecting (and authenticating) first if needed."""
        if self._client is None:
            await self.connect()
        client = self._client
        assert client is not None
        if self._credentials is not None and client.token is None:
            async with self._connect_lock:
                if client.token is None:
                    await self._authenticate(client, self._credentials)
        return client

    async def _authenticate(self, client: EtcdClient, credentials: EtcdCredentials) -> None:
        user = credentials.user
        password = await asyncio.to_thread(credentials.secret)
        request = aetcd.rpc.AuthenticateRequest(name=user, password=password)
        try:
            response = await client.auth_stub.Authenticate(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            unavailable, detail = describe(exc, self.timeout)
            if "authentication is not enabled" in detail:
                await client.use_token("")  # an etcd that checks no user: calls go as they are
                return
            if unavailable:
                raise StoreUnavailableError(
                    f"etcd at {self.where} is unreachable: authenticating user {user!r} "
                    f"failed: {detail}", failover=looks_like_failover(exc)) from exc
            raise StoreError(
                f"etcd at {self.where} refused user {user!r}: {detail}; check the user and "
                f"its password ({USER_ENV}, and {PASSWORD_ENV} or {PASSWORD_FILE_ENV}; "
                "on Kubernetes the etcd credentials Secret)") from exc
        await client.use_token(response.token)

    @contextlib.contextmanager
    def errors(self, operation: str) -> Iterator[None]:
        """Turn aetcd and gRPC failures into :class:`StoreError` naming etcd."""
        try:
            yield
        except StoreError:
            raise
        except asyncio.CancelledError:
            # grpc.aio cancels the calls in flight when the channel closes: that is the
            # store closing under the caller, not the caller being cancelled.
            if self._closed.is_set() and not being_cancelled():
                raise StoreClosedError(
                    f"the store for etcd at {self.where} was closed during {operation}"
                ) from None
            raise
        except (aetcd.ClientError, grpc.RpcError, grpc.aio.UsageError) as exc:
            if self._closed.is_set():
                raise StoreClosedError(f"the store for etcd at {self.where} is closed") from exc
            unavailable, detail = describe(exc, self.timeout)
            if self._token_expired(exc):
                raise StoreUnavailableError(
                    f"etcd at {self.where} no longer takes the auth token of user "
                    f"{self._credentials.user if self._credentials else ''!r} ({detail}): "
                    f"{operation} failed; the next call authenticates again", failover=True
                ) from exc
            if unavailable:
                raise StoreUnavailableError(
                    f"etcd at {self.where} is unreachable: {operation} failed: {detail}",
                    failover=looks_like_failover(exc),
                ) from exc
            raise StoreError(
                f"etcd at {self.where} refused {operation}: {detail}{self._auth_hint(detail)}"
            ) from exc

    def _token_expired(self, exc: BaseException) -> bool:
        """A call refused for its token (etcd restarted, or the token went unused too
        long): forget the token, so that the next call authenticates again."""
        error = rpc_error(exc)
        if (error is None or error.code() != grpc.StatusCode.UNAUTHENTICATED
                or self._client is None or self._credentials is None):
            return False
        self._client.forget_token()
        return True

    def _auth_hint(self, detail: str) -> str:
        if "user name is empty" in detail:
            return (f"; etcd checks users: set {USER_ENV} and {PASSWORD_ENV} (or "
                    f"{PASSWORD_FILE_ENV})")
        if "permission denied" in detail and self._credentials is not None:
            return f" for user {self._credentials.user!r}: grant it a role on Weir's keys"
        return ""

    async def read(self, operation: str, call: Callable[[EtcdClient], Any]) -> Any:
        """Run a read; if the connection failed (not timed out), try once more at once.

        With several endpoints the second try goes to another member; a read is always
        safe to repeat. A timeout is not retried so that a read never takes much longer
        than the call timeout.
        """
        for attempt in (1, 2):
            client = await self.ready()
            try:
                with self.errors(operation):
                    return await call(client)
            except StoreUnavailableError as exc:
                if attempt == 2 or self._closed.is_set() or timed_out(exc):
                    raise
        raise AssertionError("unreachable")

    async def sleep_unless_closed(self, seconds: float) -> bool:
        """Sleep ``seconds``; return ``True`` at once if the store gets closed."""
        try:
            await within(self._closed.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        if being_cancelled():
            raise asyncio.CancelledError  # see the note in weir.etcd.etcd_watch
        return True
