"""The leader's work: reconcile replicas to the goal, hold replica sessions, push routes.

Design. The goal lives only in etcd and is re-read every pass; what replicas report lives
only in their sessions (and their etcd records). Nothing else is remembered across passes
except observations that cannot be re-read: recent failures (for status and backoff) and
commands already sent (so they are not sent twice). A leader that just took over starts
from the records: replicas still running re-register within a heartbeat and are adopted;
records whose process is gone are forgotten; no replica is started twice, because starting
is bounded by the target count over records, and a record is written before its launch.

Before the first route table goes out, a new leader waits until every recorded replica has
re-registered (or ADOPTION_GRACE_S passed): proxies keep the previous leader's table
meanwhile, so no request sees an empty table during a failover.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from weir.build import BuiltApp
from weir.controller import reconciler
from weir.controller.goal import AppGoal, DeploymentPlan, ReplicaRecord, deployment_plans
from weir.controller.launcher import Launcher
from weir.controller.reconciler import ReplicaView
from weir.controller.routing import build_route_table
from weir.controller.status import AppView, DeploymentHealth, status_document
from weir.etcd.keys import APPS_PREFIX, GRPC_OPTIONS_KEY, HTTP_OPTIONS_KEY, REPLICAS_PREFIX
from weir.etcd.store import Store
from weir.protos import weir_pb2 as pb
from weir.runtime_env import PreparedEnv, RuntimeEnvError, prepare

log = structlog.get_logger("weir.controller")

TICK_S = 0.5
ADOPTION_GRACE_S = 3.0
REGISTER_TIMEOUT_S = 60.0
BUILD_TIMEOUT_S = 120.0
PUBLISH_MIN_INTERVAL_S = 0.05
STOP_MARGIN_S = 5.0


@dataclass
class Session:
    """A replica's live session, as the leader holds it."""

    replica_id: str
    commands: asyncio.Queue[pb.ReplicaCommand] = field(default_factory=asyncio.Queue)
    report: pb.ReplicaReport | None = None
    connected: bool = True
    init_sent: bool = False


@dataclass
class ReplicaBook:
    """Observations of one replica that cannot be re-read from etcd."""

    stop_deadline: float | None = None
    pending_user_config: str | None = None
    last_state: str = "PENDING"
    was_running: bool = False


class Leader:
    """Everything the leading controller does; one instance per term of leadership."""

    def __init__(self, store: Store, launcher: Launcher, *, python_executable: str,
                 cluster_id: str = "") -> None:
        self.store = store
        self.launcher = launcher
        self.python = python_executable
        self.cluster_id = cluster_id
        self.started = time.monotonic()
        self.goals: dict[str, AppGoal] = {}
        self.goal_revisions: dict[str, int] = {}
        self.http_options: dict[str, Any] = {}
        self.grpc_options: dict[str, Any] = {}
        self.records: dict[str, ReplicaRecord] = {}
        self.sessions: dict[str, Session] = {}
        self.books: dict[str, ReplicaBook] = {}
        self.plans: dict[tuple[str, str], DeploymentPlan] = {}
        self.health: dict[tuple[str, str], DeploymentHealth] = {}
        self.backoff_until: dict[tuple[str, str], float] = {}
        self.ever_running: dict[str, float] = {}
        self.builds: dict[str, asyncio.Task[None]] = {}
        self.envs: dict[str, PreparedEnv] = {}
        self.subscribers: set[asyncio.Queue[pb.RouteTable]] = set()
        self.table = pb.RouteTable()
        self.table_ready = False
        self._wake = asyncio.Event()
        self._dirty = asyncio.Event()
        #: Set when this term ends: every session and route stream of this leader closes.
        self.ended = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the goal and the records, then run the loops."""
        await self.refresh()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reconcile_loop()),
                       loop.create_task(self._publish_loop())]
        log.info("leading", apps=sorted(self.goals), replicas=len(self.records))

    async def stop(self) -> None:
        """End this term: stop loops and builds (replicas keep running)."""
        for task in [*self._tasks, *self.builds.values()]:
            task.cancel()
        for task in [*self._tasks, *self.builds.values()]:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for sess in self.sessions.values():
            sess.connected = False
        # End every replica session and route stream: their peers find the next leader.
        self.ended.set()

    def wake(self) -> None:
        """Reconcile now (the goal or a replica changed)."""
        self._wake.set()

    # ------------------------------------------------------------------ reading

    async def refresh(self) -> None:
        """Re-read the goal and the replica records from etcd."""
        items, _ = await self.store.get_prefix(APPS_PREFIX)
        self.goals = {}
        self.goal_revisions = {}
        for kv in items:
            goal = AppGoal.from_bytes(kv.value)
            self.goals[goal.name] = goal
            self.goal_revisions[goal.name] = kv.mod_revision
        grpc_options = await self.store.get(GRPC_OPTIONS_KEY)
        self.grpc_options = json.loads(grpc_options.value) if grpc_options else {}
        options = await self.store.get(HTTP_OPTIONS_KEY)
        self.http_options = json.loads(options.value) if options else {}
        items, _ = await self.store.get_prefix(REPLICAS_PREFIX)
        self.records = {}
        for kv in items:
            record = ReplicaRecord.from_bytes(kv.value)
            self.records[record.replica_id] = record
        self.plans = {}
        for goal in self.goals.values():
            for p in deployment_plans(goal):
                self.plans[(goal.name, p.target.name)] = p

    # ------------------------------------------------------------------ observing

    def view(self, record: ReplicaRecord, now: float) -> ReplicaView:
        """What the plan sees of one replica."""
        book = self.books.setdefault(record.replica_id, ReplicaBook())
        sess = self.sessions.get(record.replica_id)
        if sess is not None and sess.connected and sess.report is not None:
            state = sess.report.state
            user_config = sess.report.user_config_json
        elif not self.launcher.is_alive(record):
            state, user_config = "DEAD", ""
        else:
            state, user_config = book.last_state, ""
            if state == "PENDING" and time.time() - record.started_at > REGISTER_TIMEOUT_S:
                state = "FAILED"
        book.last_state = state if state != "DEAD" else book.last_state
        if state == "RUNNING":
            book.was_running = True
        if book.pending_user_config == user_config:
            book.pending_user_config = None
        return ReplicaView(
            replica_id=record.replica_id, app=record.app, deployment=record.deployment,
            version=record.version, state=state, user_config_json=user_config,
            stopping=book.stop_deadline is not None,
            stop_overdue=book.stop_deadline is not None and now > book.stop_deadline,
            pending_user_config=book.pending_user_config,
        )

    def views(self) -> list[ReplicaView]:
        """Every recorded replica, viewed now."""
        now = time.monotonic()
        return [self.view(r, now) for r in self.records.values()]

    # ------------------------------------------------------------------ reconciling

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("reconcile pass failed", exc_info=True)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass

    async def reconcile_once(self) -> None:
        """One level-triggered pass."""
        await self.refresh()
        for name, goal in self.goals.items():
            if goal.built_json is None and not goal.build_error and name not in self.builds:
                self.builds[name] = asyncio.get_running_loop().create_task(self._build(goal))
        frozen = frozenset(n for n, g in self.goals.items()
                           if g.built_json is None and not g.build_error)
        views = self.views()
        self._note_failures(views)
        now = time.monotonic()
        may_start = frozenset(k for k in self.plans if self.backoff_until.get(k, 0) <= now)
        result = reconciler.plan([p.target for p in self.plans.values()], views,
                                 may_start=may_start, frozen_apps=frozen)
        for action in result.actions:
            await self._execute(action)
        self._mark_dirty()

    def _note_failures(self, views: list[ReplicaView]) -> None:
        running_new: dict[tuple[str, str], int] = {}
        for v in views:
            key = (v.app, v.deployment)
            p = self.plans.get(key)
            health = self.health.setdefault(key, DeploymentHealth())
            book = self.books.get(v.replica_id, ReplicaBook())
            if v.stopping:
                continue
            if v.state in reconciler.BROKEN_STATES or (v.state == "DEAD" and book.was_running):
                sess = self.sessions.get(v.replica_id)
                reason = (sess.report.message if sess and sess.report and sess.report.message
                          else f"replica {v.replica_id} "
                               + ("died unexpectedly" if v.state == "DEAD"
                                  else f"is {v.state.lower()}"))
                health.message = reason
                health.consecutive_failures += 1
                delay = min(30.0, 0.25 * 2 ** min(health.consecutive_failures, 8))
                self.backoff_until[key] = time.monotonic() + delay
                log.warning("replica failed", replica_id=v.replica_id, reason=reason,
                            retry_in_s=round(delay, 2))
            if p is not None and v.version == p.target.version and v.state == "RUNNING":
                running_new[key] = running_new.get(key, 0) + 1
        for key, p in self.plans.items():
            health = self.health.setdefault(key, DeploymentHealth())
            if running_new.get(key, 0) >= p.target.num_replicas:
                health.message = ""
                health.consecutive_failures = 0
                health.healthy_version = p.target.version
                health.healthy_replicas = p.target.num_replicas

    async def _execute(self, action: reconciler.Action) -> None:
        if isinstance(action, reconciler.Start):
            await self._start_replica(action)
        elif isinstance(action, reconciler.Stop):
            await self._stop_replica(action)
        elif isinstance(action, reconciler.Reconfigure):
            sess = self.sessions.get(action.replica_id)
            if sess is not None and sess.connected:
                sess.commands.put_nowait(pb.ReplicaCommand(
                    kind="RECONFIGURE", user_config_json=action.user_config_json))
                self.books.setdefault(action.replica_id, ReplicaBook()).pending_user_config = (
                    action.user_config_json)
                log.info("reconfiguring", replica_id=action.replica_id)
        elif isinstance(action, reconciler.Forget):
            await self._forget(action.replica_id)

    async def _forget(self, replica_id: str) -> None:
        await self.store.delete(REPLICAS_PREFIX + replica_id)
        self.records.pop(replica_id, None)
        self.sessions.pop(replica_id, None)
        self.books.pop(replica_id, None)

    async def _prepared_env(self, app: str) -> PreparedEnv:
        goal = self.goals[app]
        env = self.envs.get(goal.build_key)
        if env is None:
            loop = asyncio.get_running_loop()
            env = await loop.run_in_executor(None, prepare, goal.config.get("runtime_env"))
            self.envs[goal.build_key] = env
        return env

    async def _start_replica(self, action: reconciler.Start) -> None:
        key = (action.app, action.deployment)
        try:
            env = await self._prepared_env(action.app)
        except RuntimeEnvError as exc:
            self.health.setdefault(key, DeploymentHealth()).message = str(exc)
            self.backoff_until[key] = time.monotonic() + 5
            return
        replica_id = f"{action.app}#{action.deployment}#{secrets.token_hex(3)}"
        record = ReplicaRecord(replica_id, action.app, action.deployment, action.version,
                               pid=0, started_at=time.time(), cluster_id=self.cluster_id)
        await self.store.put(REPLICAS_PREFIX + replica_id, record.to_bytes())
        loop = asyncio.get_running_loop()
        pid = await loop.run_in_executor(None, self.launcher.launch, record, env)
        record = replace(record, pid=pid)
        await self.store.put(REPLICAS_PREFIX + replica_id, record.to_bytes())
        self.records[replica_id] = record
        self.books[replica_id] = ReplicaBook()
        log.info("started replica", replica_id=replica_id, pid=pid, version=action.version)

    async def _stop_replica(self, action: reconciler.Stop) -> None:
        record = self.records.get(action.replica_id)
        if record is None:
            return
        book = self.books.setdefault(action.replica_id, ReplicaBook())
        sess = self.sessions.get(action.replica_id)
        if action.kill or sess is None or not sess.connected:
            log.info("killing replica", replica_id=action.replica_id, reason=action.reason)
            await asyncio.get_running_loop().run_in_executor(None, self.launcher.kill, record)
            await self._forget(action.replica_id)
            return
        p = self.plans.get((record.app, record.deployment))
        graceful = float(p.options["graceful_shutdown_timeout_s"]) if p else 20.0
        sess.commands.put_nowait(pb.ReplicaCommand(kind="STOP",
                                                   graceful_shutdown_timeout_s=graceful))
        book.stop_deadline = time.monotonic() + graceful + STOP_MARGIN_S
        log.info("stopping replica", replica_id=action.replica_id, reason=action.reason)

    async def _build(self, goal: AppGoal) -> None:
        """Build an app from its import path in a child process; write the result back."""
        try:
            built_json, error = await self._run_build(goal)
        except RuntimeEnvError as exc:
            built_json, error = None, str(exc)
        finally:
            self.builds.pop(goal.name, None)
        current = await self.store.get(APPS_PREFIX + goal.name)
        if current is None:
            return
        latest = AppGoal.from_bytes(current.value)
        if latest.build_key != goal.build_key or latest.deployment_timestamp != \
                goal.deployment_timestamp:
            return  # a newer deploy superseded this build
        latest.built_json, latest.build_error = built_json, error
        await self.store.commit(puts={APPS_PREFIX + goal.name: latest.to_bytes()},
                                expect_mod_revision={APPS_PREFIX + goal.name:
                                                     current.mod_revision})
        log.info("built application", app=goal.name, error=error or None)
        self.wake()

    async def _run_build(self, goal: AppGoal) -> tuple[str | None, str]:
        from weir.runtime_env import process_env

        env = await self._prepared_env(goal.name)
        import_path = goal.config["import_path"]
        cmd = [self.python, "-m", "weir.build", "--import-path", import_path, "--app-name",
               goal.name, "--args-json", json.dumps(goal.config.get("args") or {})]
        # subprocess (vfork + exec) in a worker thread rather than asyncio's subprocess: the
        # event loop's fork() runs gRPC's fork handlers in the child, which can crash it.
        try:
            returncode, out, err = await asyncio.get_running_loop().run_in_executor(
                None, _run_process, cmd, env.cwd, process_env(env), BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, (f"importing {import_path!r} did not finish within "
                          f"{BUILD_TIMEOUT_S:.0f} s")
        try:
            data = json.loads(out)
            if not isinstance(data, dict) or not ("error" in data or "deployments" in data):
                raise ValueError("unexpected output")
        except ValueError:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            return None, (f"building {import_path!r} failed (exit code {returncode}): "
                          f"{' '.join(tail)}")
        if "error" in data:
            return None, f"failed to import {import_path!r}: {data['error']}"
        return json.dumps(data), ""

    # ------------------------------------------------------------------ sessions

    def spec_for(self, record: ReplicaRecord) -> dict[str, Any] | None:
        """What a replica runs: None if its version is no longer wanted."""
        p = self.plans.get((record.app, record.deployment))
        if p is None or p.target.version != record.version:
            return None
        env = self.envs.get(self.goals[record.app].build_key, PreparedEnv())
        return {
            "app": record.app, "deployment": record.deployment, "version": record.version,
            "definition": base64.b64encode(p.spec.definition).decode(),
            "options": p.options, "sys_paths": env.sys_paths,
            "grpc_servicer_functions": self.grpc_options.get("grpc_servicer_functions", []),
        }

    async def session(self, reports: AsyncIterator[pb.ReplicaReport]
                      ) -> AsyncIterator[pb.ReplicaCommand]:
        """Hold one replica's session: take its reports, send its commands."""
        first = await anext(aiter(reports))
        replica_id = first.replica_id
        record = self.records.get(replica_id)
        if record is None:
            kv = await self.store.get(REPLICAS_PREFIX + replica_id)
            record = ReplicaRecord.from_bytes(kv.value) if kv else None
        if record is None:
            log.warning("unknown replica registered; stopping it", replica_id=replica_id)
            yield pb.ReplicaCommand(kind="STOP", graceful_shutdown_timeout_s=5)
            return
        if record.pid != first.pid:
            record = replace(record, pid=first.pid)
            await self.store.put(REPLICAS_PREFIX + replica_id, record.to_bytes())
        self.records[replica_id] = record
        sess = Session(replica_id, report=first)
        self.sessions[replica_id] = sess
        log.info("replica registered", replica_id=replica_id, state=first.state,
                 address=first.address)
        yield pb.ReplicaCommand(kind="REGISTERED")
        if not first.version and first.state == "STARTING":
            spec = self.spec_for(record)
            if spec is None:
                sess.commands.put_nowait(pb.ReplicaCommand(kind="STOP",
                                                           graceful_shutdown_timeout_s=5))
            else:
                sess.commands.put_nowait(pb.ReplicaCommand(kind="INIT",
                                                           spec_json=json.dumps(spec)))
        book = self.books.setdefault(replica_id, ReplicaBook())
        if book.stop_deadline is not None:
            sess.commands.put_nowait(pb.ReplicaCommand(kind="STOP"))

        async def read() -> None:
            async for report in reports:
                previous = sess.report
                sess.report = report
                if previous is None or previous.state != report.state:
                    self.wake()
                self._mark_dirty()

        reader = asyncio.get_running_loop().create_task(read())
        self._mark_dirty()
        self.wake()
        ended = asyncio.get_running_loop().create_task(self.ended.wait())
        try:
            while not reader.done() and not ended.done():
                getter = asyncio.get_running_loop().create_task(sess.commands.get())
                done, _ = await asyncio.wait({reader, getter, ended},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            reader.cancel()
            ended.cancel()
            if self.sessions.get(replica_id) is sess:
                sess.connected = False
            self._mark_dirty()
            self.wake()

    # ------------------------------------------------------------------ routes

    def _mark_dirty(self) -> None:
        self._dirty.set()

    def _current_table(self) -> pb.RouteTable:
        running = []
        for rid, sess in self.sessions.items():
            rep = sess.report
            record = self.records.get(rid)
            book = self.books.get(rid)
            if (sess.connected and rep is not None and rep.state == "RUNNING"
                    and record is not None and (book is None or book.stop_deadline is None)):
                running.append((rid, record.app, record.deployment, rep.address, rep.ongoing))
        return build_route_table(self.goals, self.plans, running, self.http_options)

    def _adopted(self) -> bool:
        if self.table_ready:
            return True
        if time.monotonic() - self.started > ADOPTION_GRACE_S or all(
            rid in self.sessions for rid in self.records
        ):
            self.table_ready = True
        return self.table_ready

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._adopted():
                table = self._current_table()
                table.version = self.table.version
                if table != self.table:
                    table.version += 1
                    self.table = table
                    for queue in list(self.subscribers):
                        _offer_latest(queue, table)
            else:
                self._dirty.set()
            await asyncio.sleep(PUBLISH_MIN_INTERVAL_S)

    async def watch_routes(self) -> AsyncIterator[pb.RouteTable]:
        """The route table now (once adopted) and on every change."""
        queue: asyncio.Queue[pb.RouteTable] = asyncio.Queue(maxsize=1)
        self.subscribers.add(queue)
        if self.table_ready:
            _offer_latest(queue, self.table)
        ended = asyncio.get_running_loop().create_task(self.ended.wait())
        try:
            while not ended.done():
                getter = asyncio.get_running_loop().create_task(queue.get())
                await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            ended.cancel()
            self.subscribers.discard(queue)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The `applications:` document of `weir status`."""
        apps = []
        for goal in self.goals.values():
            built = goal.built
            apps.append(AppView(
                name=goal.name, deployment_timestamp=goal.deployment_timestamp,
                built=built is not None, build_error=goal.build_error,
                deployments=[d.name for d in built.deployments] if built else [],
                ingress=built.ingress if built else "", route_prefix=goal.route_prefix))
        targets = {k: p.target for k, p in self.plans.items()}
        ever = {n: self.ever_running.get(n) == g.deployment_timestamp
                for n, g in self.goals.items()}
        doc, running = status_document(apps, targets, self.views(), self.health, ever)
        for name, is_running in running.items():
            if is_running:
                self.ever_running[name] = self.goals[name].deployment_timestamp
        return doc

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica with its state, for `ListReplicas`."""
        out = []
        for view in self.views():
            record = self.records[view.replica_id]
            sess = self.sessions.get(view.replica_id)
            out.append({
                "replica_id": view.replica_id, "app": view.app, "deployment": view.deployment,
                "version": view.version, "state": "STOPPING" if view.stopping else view.state,
                "pid": record.pid, "address": sess.report.address if sess and sess.report else "",
                "ongoing": sess.report.ongoing if sess and sess.report else 0,
                "log_file": record.log_file,
            })
        return out


def _run_process(cmd: list[str], cwd: str | None, env: dict[str, str],
                 timeout: float) -> tuple[int, bytes, bytes]:
    """Run a child to completion (blocking: call it in a worker thread)."""
    proc = subprocess.run(cmd, cwd=cwd or None, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _offer_latest(queue: asyncio.Queue[pb.RouteTable], table: pb.RouteTable) -> None:
    """Replace whatever the subscriber has not read yet with the newest table."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(table)


def app_names(built: BuiltApp | None) -> list[str]:
    """Deployment names of a built app."""
    return [d.name for d in built.deployments] if built else []
