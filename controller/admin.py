"""The controller's gRPC face: the admin API (CLI, SDK), replica sessions and route streams.

Any controller answers config reads (they come from etcd). Everything else needs the leader:
a standby refuses with FAILED_PRECONDITION "not the leader; leader at ADDRESS" and the
client follows, so a write is applied once, by the one leader.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import structlog

from weir.config.config_file import config_from_json
from weir.config.diff import diff_applications
from weir.config.errors import ConfigError
from weir.config.tls import tls_problem
from weir.controller.event_log import Event, read_events
from weir.controller.goal import AppGoal, apply_deploy
from weir.controller.leader import Leader
from weir.controller.placement import replica_request
from weir.dataplane.route_table import parse_leader
from weir.etcd.keys import (
    APPS_PREFIX,
    GRPC_OPTIONS_KEY,
    HISTORY_PREFIX,
    HTTP_OPTIONS_KEY,
    LEADER_KEY,
    LOGGING_CONFIG_KEY,
)
from weir.etcd.store import Store, StoreError, in_failover
from weir.leader_redirect import refuse_not_leader
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.runtime_env import code_digest

log = structlog.get_logger("weir.controller.admin")

#: How many accepted configs `weir config --history` keeps.
HISTORY_LIMIT = 100
#: How long an admin call waits out an etcd failover (a leader election takes 1-1.6 s on
#: a quiet machine and several seconds on a busy one, where a vote can split and be run
#: again; a member dying under a call, a reconnect to another) before failing, counted
#: from its first sign (`EtcdPatience`). 2.5 s failed deploys under a CI run's load. When
#: no etcd member answers at all, calls fail at once instead.
ETCD_PATIENCE_S = 5.0
ETCD_RETRY_S = 0.2

T = TypeVar("T")


class EtcdPatience:
    """How long one admin call waits out an etcd failover: ETCD_PATIENCE_S from the first
    error that looks like one (`in_failover`), not from the call's start. A call whose
    first attempt hung on the member that died, until the store's 1 s timeout, kept only
    1.5 s of retries for an election that takes 1 to 1.6 s, more on a busy machine (a CI
    run failed a deploy so). Errors that do not look like a failover (no member answers)
    are not waited out. The clock is passed in."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    def retry(self, exc: StoreError) -> bool:
        """Whether to try again after `exc`."""
        if not in_failover(exc):
            return False
        now = self._clock()
        if self._since is None:
            self._since = now
        return now - self._since < ETCD_PATIENCE_S


async def _patiently(read: Callable[[], Awaitable[T]]) -> T:
    """Run an etcd read, waiting out an etcd leader election (`EtcdPatience`)."""
    patience = EtcdPatience()
    while True:
        try:
            return await read()
        except StoreError as exc:
            if not patience.retry(exc):
                raise
        await asyncio.sleep(ETCD_RETRY_S)


def resource_problem(app_configs: list[dict[str, Any]]) -> str:
    """What is wrong with a config's `ray_actor_options`, with its path ("" if nothing):
    checked at deploy, so a bad request fails there rather than at placement."""
    for i, cfg in enumerate(app_configs):
        for j, entry in enumerate(cfg.get("deployments") or []):
            try:
                replica_request(entry.get("ray_actor_options"))
            except ValueError as exc:
                return f"applications[{i}].deployments[{j}]: {exc}"
    return ""


def by_value_apps(pickled_apps: Mapping[str, bytes]) -> tuple[dict[str, str], str]:
    """The apps a deploy ships by value (name -> the built app's JSON, as `serve.run` sends
    it), and what is wrong with them ("" if nothing). Found by fuzzing: bytes that were no
    UTF-8 text failed the call with an opaque error."""
    out = {}
    for name, data in pickled_apps.items():
        try:
            out[name] = data.decode()
            json.loads(out[name])
        except ValueError:
            return {}, (f"pickled_apps[{name!r}] is not a built application (the JSON "
                        "serve.run sends); deploy it with serve.run or by import path")
    return out, ""


class AdminService(pb_grpc.ControllerServicer):
    """Serves `weir.Controller` for one controller process."""

    def __init__(self, store: Store, leader: Callable[[], Leader | None],
                 leader_address: Callable[[], str], on_shutdown: Callable[[], Any],
                 starting_leader: Callable[[], Awaitable[Leader | None]] | None = None
                 ) -> None:
        """`starting_leader`: the leader this process is starting (it won the election
        and its term is being set up), once started; None if it is not starting one."""
        self.store = store
        self._leader = leader
        self._leader_address = leader_address
        self._on_shutdown = on_shutdown
        self._starting_leader = starting_leader

    async def _need_leader(self, context: grpc.aio.ServicerContext) -> Leader:
        leader = self._leader()
        if leader is None and self._starting_leader is not None:
            # Won, not yet started: proxies and replicas that saw the leader key change
            # call at once; refused, they would come back only after a backoff.
            leader = await self._starting_leader()
        if leader is None:
            address = self._leader_address()
            if not address:
                # Between terms, or etcd is away (then no leader can be elected): ask etcd,
                # so that the answer is fresh and, if etcd cannot answer, names it.
                try:
                    kv = await self.store.get(LEADER_KEY)
                except StoreError as exc:
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        f"the cluster has no leader: {exc}")
                    raise
                address = parse_leader(kv.value) if kv is not None else ""
            await refuse_not_leader(context, address)
        return leader

    # ------------------------------------------------------------ data-plane support

    async def ReplicaSession(self, request_iterator: AsyncIterator[pb.ReplicaReport],
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[pb.ReplicaCommand]:
        """A replica's session (leader only)."""
        leader = await self._need_leader(context)
        try:
            async for command in leader.session(request_iterator):
                yield command
        except StoreError as exc:
            # etcd did not take the replica's registration (a slow or failing-over etcd, or
            # this term is over: `TermEnded`): the replica retries its session, as after
            # any broken stream, with whichever controller leads then.
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the registration was not written ({exc}); register again")

    async def WatchRoutes(self, request: pb.WatchRoutesRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RouteTable]:
        """Stream the route table (leader only)."""
        leader = await self._need_leader(context)
        log.info("route subscriber", subscriber=request.subscriber)
        async for table in leader.watch_routes(request.accepts_deltas,
                                               request.accepts_compact_load):
            yield table

    async def ReportQueues(self, request_iterator: AsyncIterator[pb.QueueReport],
                           context: grpc.aio.ServicerContext) -> pb.QueueReportReply:
        """A caller's queued requests per deployment, for autoscaling (leader only)."""
        leader = await self._need_leader(context)
        await leader.report_queues(request_iterator)
        return pb.QueueReportReply()

    # ------------------------------------------------------------ admin

    async def Deploy(self, request: pb.DeployRequest,
                     context: grpc.aio.ServicerContext) -> pb.DeployReply:
        """Validate a config, then replace the goal in one etcd transaction."""
        leader = await self._need_leader(context)
        try:
            config = config_from_json(request.config_json)
        except ConfigError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        app_configs = [a.model_dump(mode="json", exclude_unset=True)
                       for a in config.applications]
        for cfg, app in zip(app_configs, config.applications, strict=True):
            cfg["name"] = app.name
            cfg["deployments"] = [d.model_dump(mode="json", exclude_unset=True)
                                  for d in app.deployments]
        problem = resource_problem(app_configs)
        if not problem:
            # Checked before the goal changes: bad TLS files leave the running config be.
            problem = await asyncio.to_thread(tls_problem, config.http_options.model_dump())
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        by_value, problem = by_value_apps(request.pickled_apps)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        code_digests = await asyncio.to_thread(
            lambda: {c["name"]: code_digest(c.get("runtime_env")) for c in app_configs})
        http_options = config.http_options.model_dump(mode="json")
        grpc_options = config.grpc_options.model_dump(mode="json")
        # The history key names this deploy: if a commit's outcome is unknown (etcd timed
        # out while electing a leader), finding the key tells whether it applied, so a
        # retry never applies the deploy twice.
        history_key = f"{HISTORY_PREFIX}{time.time_ns():020d}"
        patience = EtcdPatience()
        conflicts = 0
        revision: int | None = None
        outcome_unknown = False
        while True:
            try:
                if outcome_unknown and await self.store.get(history_key) is not None:
                    revision = -1  # an earlier attempt's commit did apply
                    break
                leader_goals, revisions = await self._read_goals()
                puts, deletes = apply_deploy(leader_goals, app_configs, partial=request.partial,
                                             by_value=by_value, now=time.time(),
                                             code_digests=code_digests)
                previous = await self._latest_config()
                merged = self._merged_config(previous, config.model_dump(mode="json"),
                                             request.partial, deletes)
                try:
                    merged_config = config_from_json(json.dumps(merged))
                except ConfigError as exc:
                    # Found by fuzzing: a partial deploy clashing with the apps it keeps
                    # (a route_prefix taken by another app) failed with an opaque UNKNOWN.
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"with the applications already deployed: {exc}")
                    raise
                diff = diff_applications(config_from_json(json.dumps(previous))
                                         if previous else None, merged_config)
                if request.dry_run:
                    return pb.DeployReply(message="dry run: nothing changed",
                                          diff_json=json.dumps(diff, default=str))
                keys: dict[str, bytes] = {APPS_PREFIX + n: g.to_bytes() for n, g in puts.items()}
                if not request.partial or "http_options" in config.model_fields_set:
                    keys[HTTP_OPTIONS_KEY] = json.dumps(http_options).encode()
                if not request.partial or "grpc_options" in config.model_fields_set:
                    keys[GRPC_OPTIONS_KEY] = json.dumps(grpc_options).encode()
                if not request.partial or "logging_config" in config.model_fields_set:
                    # The controllers' and proxies' own logging (weir.system_logging).
                    keys[LOGGING_CONFIG_KEY] = json.dumps(config.logging_config or {}).encode()
                keys[history_key] = json.dumps(
                    {"timestamp": time.time(), "config": merged}).encode()
                guards = {APPS_PREFIX + n: revisions.get(n, 0) for n in [*puts, *deletes]}
                revision = await self.store.commit(
                    puts=keys, deletes=[APPS_PREFIX + n for n in deletes],
                    expect_mod_revision=guards)
            except ConfigError as exc:
                # A partial deploy valid alone may clash with the apps it joins (two apps on
                # one route_prefix): the merged whole is refused, and nothing is written.
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                raise
            except StoreError as exc:
                if patience.retry(exc):
                    # Whatever failed, a commit may have gone out: the next attempt asks.
                    outcome_unknown = True
                    log.info("etcd is failing over; deploy tries again", error=str(exc))
                    await asyncio.sleep(ETCD_RETRY_S)
                    continue
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    f"cannot write the goal state: {exc}")
                raise
            if revision is not None:
                break
            conflicts += 1
            if conflicts >= 5:
                await context.abort(grpc.StatusCode.ABORTED,
                                    "the goal changed concurrently five times; try again")
        await self._trim_history()
        leader.wake()
        changed = sorted(puts)
        await leader.events.record(
            *(Event(time.time(), "deploy", "deployed a new config", n) for n in changed),
            *(Event(time.time(), "delete", "removed by a deploy", n) for n in deletes))
        log.info("deployed", changed=changed, deleted=deletes, revision=revision)
        return pb.DeployReply(
            message=f"deployed: {len(changed)} app(s) changed, {len(deletes)} removed",
            revision=max(revision or 0, 0), diff_json=json.dumps(diff, default=str))

    async def _read_goals(self) -> tuple[dict[str, AppGoal], dict[str, int]]:
        items, _ = await self.store.get_prefix(APPS_PREFIX)
        goals, revisions = {}, {}
        for kv in items:
            goal = AppGoal.from_bytes(kv.value)
            goals[goal.name] = goal
            revisions[goal.name] = kv.mod_revision
        return goals, revisions

    async def _latest_config(self) -> dict[str, Any] | None:
        items, _ = await self.store.get_prefix(HISTORY_PREFIX)
        if not items:
            return None
        return json.loads(items[-1].value)["config"]  # type: ignore[no-any-return]

    @staticmethod
    def _merged_config(previous: dict[str, Any] | None, new: dict[str, Any], partial: bool,
                       deletes: list[str]) -> dict[str, Any]:
        if not partial or previous is None:
            return new
        names = {a.get("name", "default") for a in new["applications"]}
        kept = [a for a in previous.get("applications", [])
                if a.get("name", "default") not in names
                and a.get("name", "default") not in deletes]
        return {**previous, "applications": kept + new["applications"]}

    async def _trim_history(self) -> None:
        """Drop the oldest accepted configs past HISTORY_LIMIT. Best effort: the deploy has
        applied already, and the next one trims what this one could not."""
        try:
            items, _ = await self.store.get_prefix(HISTORY_PREFIX)
            for kv in items[:-HISTORY_LIMIT]:
                await self.store.delete(kv.key)
        except StoreError as exc:
            log.warning("could not trim the config history; the next deploy will",
                        error=str(exc))

    async def GetConfig(self, request: pb.GetConfigRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetConfigReply:
        """The goal as held in etcd; with `history`, every accepted config."""
        try:
            if request.history:
                items, _ = await _patiently(lambda: self.store.get_prefix(HISTORY_PREFIX))
                if request.history_limit > 0:
                    items = items[-request.history_limit:]
                history = [{"revision": kv.key.rsplit("/", 1)[1], **json.loads(kv.value)}
                           for kv in items]
                return pb.GetConfigReply(config_json=json.dumps(history))
            goals, _ = await _patiently(self._read_goals)
            kv = await _patiently(lambda: self.store.get(HTTP_OPTIONS_KEY))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read the goal: {exc}")
            raise
        if request.name:
            goal = goals.get(request.name)
            if goal is None:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"no application named {request.name!r}")
                raise AssertionError("unreachable")
            return pb.GetConfigReply(config_json=json.dumps(goal.config))
        doc = {"http_options": json.loads(kv.value) if kv else {},
               "applications": [g.config for _, g in sorted(goals.items())]}
        return pb.GetConfigReply(config_json=json.dumps(doc))

    async def GetStatus(self, request: pb.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetStatusReply:
        """Applications' statuses (leader only), with controllers and proxies."""
        leader = await self._need_leader(context)
        apps = leader.status()
        if request.name:
            apps = {k: v for k, v in apps.items() if k == request.name}
        from weir.etcd.keys import CONTROLLERS_PREFIX, PROXIES_PREFIX

        try:
            controllers, _ = await self.store.get_prefix(CONTROLLERS_PREFIX)
            proxies, _ = await self.store.get_prefix(PROXIES_PREFIX)
        except StoreError:
            controllers, proxies = [], []
        leader_address = self._leader_address()
        doc = {
            "applications": apps,
            "controllers": [
                {**(info := json.loads(kv.value)),
                 "role": "leader" if info.get("address") == leader_address else "standby"}
                for kv in controllers],
            "proxies": [json.loads(kv.value) for kv in proxies],
            "nodes": leader.nodes(),
        }
        return pb.GetStatusReply(status_json=json.dumps(doc))

    async def DeleteApps(self, request: pb.DeleteAppsRequest,
                         context: grpc.aio.ServicerContext) -> pb.DeleteAppsReply:
        """Remove applications from the goal; their replicas drain and stop."""
        leader = await self._need_leader(context)
        try:
            for name in request.names:
                # A delete is safe to repeat: wait out an etcd election like the reads.
                await _patiently(functools.partial(self.store.delete, APPS_PREFIX + name))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot write the goal: {exc}")
        leader.wake()
        await leader.events.record(*(Event(time.time(), "delete", "deleted", n)
                                     for n in request.names))
        return pb.DeleteAppsReply()

    async def Shutdown(self, request: pb.ShutdownRequest,
                       context: grpc.aio.ServicerContext) -> pb.ShutdownReply:
        """Delete every app, wait for replicas to stop, then tell all controllers to exit."""
        leader = await self._need_leader(context)
        await self._on_shutdown()
        del leader
        return pb.ShutdownReply()

    async def GetEvents(self, request: pb.GetEventsRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetEventsReply:
        """The recent events, oldest first (any controller: they come from etcd)."""
        try:
            events = await _patiently(lambda: read_events(self.store, max(request.limit, 0)))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read the events: {exc}")
            raise
        return pb.GetEventsReply(events_json=json.dumps(events))

    async def ListReplicas(self, request: pb.ListReplicasRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListReplicasReply:
        """Every replica the leader knows, with state, PID and address."""
        leader = await self._need_leader(context)
        return pb.ListReplicasReply(replicas_json=json.dumps(leader.replicas()))
