"""Leader election among controllers, over one etcd key bound to a lease.

Design
------
Controllers are stateless and any number may run; exactly one, the leader, reconciles
and starts replicas. Two leaders at once would start replicas twice and fight over
them, so the rules below favour "no leader for a moment" over "two leaders".

* **The leader is whoever holds the key** (``/weir/leader``, its value the leader's
  identity). A candidate grants a lease and, in one transaction, creates the key bound
  to that lease *only if it does not exist* (compare ``create_revision == 0``). etcd
  applies transactions one at a time, so of two racing candidates exactly one wins;
  a plain put would let the second overwrite the first.
* **Why a lease**: a leader that dies (SIGKILL, host lost, partitioned) stops refreshing
  its lease, and etcd deletes the key by itself one TTL after the last refresh. Nobody
  has to decide that the leader is dead.
* **Standbys watch the key** from the revision they read and try again as soon as it is
  deleted: take-over after a crash is lease expiry plus one round trip (≈ TTL), after
  a resign (lease revoked) a few milliseconds.
* **A leader known to be dead is deposed** (:meth:`Election.depose`): when a standby
  finds that nothing listens on the leader's address any more (connection refused, not
  a timeout: a partition looks like a timeout), it revokes the lease of that one term.
  Take-over after a crash is then a fraction of a second instead of a TTL. Revoking by
  lease ID is exact: a later term has another lease and cannot be hit.

Step-down rules: the leader sets :attr:`Election.lost` and stops leading when

1. no keep-alive refresh succeeded for a whole TTL. The TTL is counted from when the last
   successful refresh was *sent*, and etcd restarts its clock only on receiving it, so
   the old leader gives up no later than etcd expires the key, hence before any standby
   can win;
2. the key is deleted or changes owner (an operator deleted it, someone revoked the
   lease): the etcd truth wins over what this process believes;
3. it resigns (SIGTERM): it stops leading *first*, then revokes the lease, so the
   standby that wins a moment later never overlaps with it.

After ``lost`` is set the caller must stop all leader work; it may ``campaign()`` again.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from weir.backoff import Backoff
from weir.etcd.keys import LEADER_KEY
from weir.etcd.store import KeyValue, Lease, Store, StoreClosedError, StoreError

__all__ = ["Election"]

log = structlog.get_logger("weir.controller.election")

_RETRY_MIN = 0.1
_RETRY_MAX = 2.0


class Election:
    """Campaign for, hold and give up the leadership of the controllers.

    ``identity`` is what :meth:`leader` returns to others (e.g. the admin address), so
    standbys can point clients at the leader. One campaign at a time per instance.
    """

    def __init__(
        self,
        store: Store,
        identity: bytes,
        *,
        key: str = LEADER_KEY,
        ttl: float = 3.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"the leader lease TTL must be positive, not {ttl!r}")
        self._store = store
        self._identity = identity
        self._key = key
        self._ttl = ttl
        #: Set when this instance stops being the leader (lease lost, key gone, resigned).
        self.lost = asyncio.Event()
        self._leading = False
        # Bumped at every win: a callback or task of an earlier term must not end this one.
        self._term = 0
        self.term_revision = 0
        self._lease: Lease | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        """Whether this instance holds the leadership right now."""
        return self._leading

    @property
    def identity(self) -> bytes:
        """This candidate's identity, the value of the leader key while it leads."""
        return self._identity

    async def leader(self) -> bytes | None:
        """The current leader's identity as etcd has it, ``None`` if there is none.

        Raises :class:`~weir.etcd.store.StoreError` if etcd cannot be read.
        """
        kv = await self._store.get(self._key)
        return None if kv is None else kv.value

    async def campaign(self) -> None:
        """Return once this instance is the leader; until then, stand by.

        etcd being away does not end the campaign: it retries with a backoff. Raises
        :class:`~weir.etcd.store.StoreClosedError` if the store is closed meanwhile. Cancel
        the call to give up campaigning.
        """
        if self._leading:
            return
        self.lost.clear()
        retry = Backoff(_RETRY_MIN, _RETRY_MAX)
        while True:
            try:
                if await self._try_to_lead():
                    return
                await self._wait_for_vacancy()
                retry.reset()
            except StoreClosedError:
                raise
            except StoreError as exc:
                log.warning("campaign interrupted; retrying", key=self._key, error=str(exc))
                await retry.sleep()

    async def depose(self, identity: bytes, reason: str) -> bool:
        """Revoke the lease of the leader named `identity`, if it still leads.

        For a standby that knows that leader's process is gone. Returns whether a lease
        was revoked. Raises :class:`~weir.etcd.store.StoreError` if etcd cannot be reached.
        """
        current = await self._store.get(self._key)
        if current is None or current.value != identity or current.lease == 0:
            return False
        log.warning("deposing a dead leader", key=self._key, leader=identity, reason=reason,
                    lease=f"{current.lease:x}")
        await self._store.revoke_lease(Lease(id=current.lease, ttl=0))
        return True

    async def _try_to_lead(self) -> bool:
        lease = await self._store.grant_lease(self._ttl)
        try:
            won = await self._store.create_if_absent(self._key, self._identity, lease=lease)
            held = await self._store.get(self._key) if won else None
        except (StoreError, asyncio.CancelledError):
            # The create may have applied; revoking the lease undoes it either way, so a
            # failed or abandoned attempt never blocks the others for a whole TTL.
            await self._revoke_quietly(lease)
            raise
        if held is None or held.value != self._identity:
            await self._revoke_quietly(lease)
            return False
        self._lease = lease
        self._leading = True
        #: The leader key's mod_revision in this term (`weir.controller.term_store`).
        self.term_revision = held.mod_revision
        self._term += 1
        term = self._term
        self._tasks = [
            self._store.keep_alive(
                lease,
                lambda: self._step_down(
                    f"the lease keep-alive gave up (no refresh for {self._ttl:g} s, "
                    "lease gone, or store closed)",
                    term=term,
                ),
            ),
            asyncio.get_running_loop().create_task(
                self._watch_own_key(held, term), name=f"weir-election-watch-{self._key}"
            ),
        ]
        log.info("became leader", key=self._key, identity=self._identity, lease=f"{lease.id:x}")
        return True

    async def _wait_for_vacancy(self) -> None:
        current = await self._store.get(self._key)
        if current is None:
            return
        log.info("standing by", key=self._key, leader=current.value)
        events = self._store.watch_prefix(self._key, start_revision=current.mod_revision + 1)
        async with contextlib.aclosing(events):
            async for event in events:
                if event.kind == "reset":
                    if await self._store.get(self._key) is None:
                        return
                elif event.key == self._key and event.kind == "delete":
                    return
        # The watch ends only when the store closes; the next grant says so.

    async def _watch_own_key(self, held: KeyValue, term: int) -> None:
        events = self._store.watch_prefix(self._key, start_revision=held.mod_revision + 1)
        async with contextlib.aclosing(events):
            async for event in events:
                if event.kind == "reset":
                    try:
                        now = await self._store.get(self._key)
                    except StoreError:
                        continue  # the keep-alive decides while etcd is away
                    if now is None or now.create_revision != held.create_revision:
                        self._step_down(
                            "the leader key was replaced during a compaction", term=term
                        )
                        return
                elif event.key != self._key:
                    continue
                elif event.kind == "delete":
                    self._step_down("the leader key was deleted", term=term)
                    return
                elif event.value != self._identity:
                    self._step_down(f"the leader key now names {event.value!r}", term=term)
                    return

    def _step_down(self, reason: str, *, term: int | None = None, voluntary: bool = False) -> None:
        if not self._leading or (term is not None and term != self._term):
            return
        self._leading = False
        self._lease = None
        self.lost.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        (log.info if voluntary else log.warning)(
            "lost leadership", key=self._key, identity=self._identity, reason=reason
        )

    async def resign(self) -> None:
        """Give up leadership now, so that a standby takes over at once (SIGTERM path).

        Stops leading (sets :attr:`lost`) before revoking the lease. If etcd is away the
        revoke fails quietly and the lease expires after its TTL instead. A campaign
        still standing by is not ended by this: cancel it.
        """
        lease = self._lease
        tasks = self._tasks
        if self._leading:
            self._step_down("resigned", voluntary=True)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: the SIGTERM path must not hang on a task slow to unwind, and a
            # straggler cannot end a later term (see _step_down's term check).
            await asyncio.wait(tasks, timeout=self._store.timeout)
        if lease is not None:
            await self._revoke_quietly(lease)

    async def _revoke_quietly(self, lease: Lease) -> None:
        try:
            await self._store.revoke_lease(lease)
        except StoreError as exc:
            log.warning(
                "could not revoke the leader lease; it expires by itself",
                lease=f"{lease.id:x}",
                ttl=lease.ttl,
                error=str(exc),
            )
