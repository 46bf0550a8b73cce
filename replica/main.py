"""The replica process: a data-plane server, a controller session, and the user's code.

Lifecycle: STARTING (serving gRPC, registered, no code yet) -> INIT from the controller ->
INITIALIZING (constructor, then reconfigure(user_config)) -> RUNNING -> on STOP or SIGTERM,
STOPPING: refuse new calls, finish in-flight ones up to graceful_shutdown_timeout_s, exit.
A constructor that raises reports FAILED with the reason, and the process exits.
"""

from __future__ import annotations

# First: structlog without rich (weir.plain_structlog says why).
import weir.plain_structlog  # noqa: F401

# isort: split
import argparse
import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

import structlog

from weir import auth, context, multiplex
from weir.cancellation import event_within, within
from weir.config.deployment_options import DEFAULT_DEPLOYMENT_OPTIONS, user_config_json
from weir.config.logging_settings import LoggingSettings, logging_settings, replica_log_file
from weir.dataplane.route_table import LeaderLocator
from weir.processes import ASSIGNED_NAME, name_this_process
from weir.protos import weir_pb2 as pb
from weir.replica.replica_rank import read_rank
from weir.replica.server import ReplicaServer, start_server
from weir.replica.session import ControllerSession
from weir.replica.user_callable import UserCallable, add_sys_paths, error_fields
from weir.runtime import (
    apply_logging_config,
    bind_process_context,
    configure_logging,
    run_until_signalled,
)
from weir.runtime_context import ReplicaContext, ReplicaRank, set_replica_context
from weir.warm_process import WARM_FLAG, enter, wait_for_assignment

log = structlog.get_logger("weir.replica")


class Replica:
    """Glue between the server, the session and the user's code."""

    def __init__(self, replica_id: str, locator: LeaderLocator, host: str) -> None:
        self.replica_id = replica_id
        self.locator = locator
        self.host = host
        self.server = ReplicaServer(self._load_changed)
        self.session: ControllerSession | None = None
        self.version = ""
        self.message = ""
        self.user_config: Any = None
        self.applied_user_config = ""
        self.spec: dict[str, Any] = {}
        self.stop = asyncio.Event()
        self.graceful_timeout = float(DEFAULT_DEPLOYMENT_OPTIONS["graceful_shutdown_timeout_s"])
        self._init_task: asyncio.Task[None] | None = None
        self.rank = ReplicaRank(0)

    def _load_changed(self) -> None:
        if self.session is not None:
            self.session.report_soon()

    def _state_changed(self) -> None:
        if self.session is not None:
            self.session.report_soon(urgent=True)

    def snapshot(self) -> pb.ReplicaReport:
        """What the replica tells the controller now."""
        return pb.ReplicaReport(
            state=self.server.state, message=self.message, ongoing=self.server.ongoing,
            version=self.version, user_config_json=self.applied_user_config,
            metrics_address=self.server.metrics_address)

    async def on_command(self, command: pb.ReplicaCommand) -> None:
        """Act on a controller command."""
        if command.kind == pb.INIT and self._init_task is None:
            self._init_task = asyncio.get_running_loop().create_task(
                self._initialize(json.loads(command.spec_json)))
        elif command.kind == pb.RECONFIGURE and self.server.state == pb.RUNNING:
            await self._reconfigure(command.user_config_json)
        elif command.kind == pb.STOP:
            self.graceful_timeout = command.graceful_shutdown_timeout_s or self.graceful_timeout
            self.stop.set()

    async def _reconfigure(self, config_json: str) -> None:
        assert self.server.user is not None
        value = json.loads(config_json) if config_json else None
        if value is not None:
            await self.server.user.reconfigure(value, self.rank)
        self.applied_user_config = user_config_json(value)
        log.info("reconfigured", user_config=value)

    async def _initialize(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        options = spec["options"]
        self.server.max_ongoing = int(options["max_ongoing_requests"])
        self.server.grpc_servicer_functions = list(spec.get("grpc_servicer_functions", []))
        self.graceful_timeout = float(options["graceful_shutdown_timeout_s"])
        if self.session is not None:
            self.session.check_every(float(options["health_check_period_s"]),
                                     float(options["health_check_timeout_s"]))
        self.server.state = pb.INITIALIZING
        add_sys_paths(spec.get("sys_paths", []))
        bind_process_context(app=spec["app"], deployment=spec["deployment"])
        self._apply_logging_config(options.get("logging_config"))
        self.rank, world_size = await read_rank(self.locator.etcd_endpoints, self.replica_id,
                                                spec)
        replica = ReplicaContext(app_name=spec["app"], deployment=spec["deployment"],
                                 replica_id=self.replica_id, rank=self.rank,
                                 world_size=world_size)
        set_replica_context(replica)
        user = UserCallable(base64.b64decode(spec["definition"]),
                            max_threads=self.server.max_ongoing)
        try:
            await user.construct()
            replica.servable_object = user.instance
            self.server.user = user
            await self._reconfigure(user_config_json(options.get("user_config")))
        except Exception as exc:
            fields = error_fields(exc)
            self.message = (f"replica {self.replica_id} failed to start: "
                            f"{fields['error_type']}: {fields['error']}")
            log.error("constructor raised", exc_info=True)
            self.server.state = pb.FAILED
            self._state_changed()
            return
        self.version = spec["version"]
        self.server.state = pb.RUNNING
        self.message = ""
        log.info("running", version=self.version)
        self._state_changed()

    def _apply_logging_config(self, config: dict[str, Any] | None) -> None:
        """The deployment's LoggingConfig for this process. None keeps the process's
        WEIR_LOG_LEVEL / WEIR_LOG_JSON setup, with Ray's default access log."""
        try:
            settings = logging_settings(config)
        except ValueError as exc:
            # Checked when deployed; a goal written by an older Weir may still hold a bad one.
            log.warning("logging_config ignored: it is invalid; fix the deployment's "
                        "logging_config", logging_config=config, error=str(exc))
            settings = LoggingSettings()
            config = None
        if config is not None:
            apply_logging_config(settings, replica_log_file(
                settings, self.spec["app"], self.spec["deployment"], self.replica_id))
        self.server.access_log = settings.access_log

    async def run(self, signalled: asyncio.Event) -> None:
        """Serve until told to stop, then drain and exit."""
        context.bind_loop(asyncio.get_running_loop())
        grpc_server, address = await start_server(self.server, self.host)
        structlog.contextvars.bind_contextvars(address=address)
        self.session = ControllerSession(self.replica_id, address, self.locator,
                                         self.snapshot, self.on_command,
                                         check_health=self.server.check_health)
        session_task = asyncio.get_running_loop().create_task(self.session.run())
        log.info("replica serving", address=address)
        stop_wait = asyncio.get_running_loop().create_task(self.stop.wait())
        sig_wait = asyncio.get_running_loop().create_task(signalled.wait())
        await asyncio.wait({stop_wait, sig_wait}, return_when=asyncio.FIRST_COMPLETED)
        await self._drain()
        session_task.cancel()
        for task in (stop_wait, sig_wait, self._init_task):
            if task is not None:
                task.cancel()
        await grpc_server.stop(0.5)
        if self.server.channel_socket is not None:  # drained: its calls are done
            await self.server.channel_socket.stop()
        try:  # the multiplexed models' __del__ run, as in Ray
            await within(multiplex.release_all(), self.graceful_timeout)
        except TimeoutError:
            log.warning("releasing multiplexed models timed out", timeout_s=self.graceful_timeout)
        if self.server.user is not None:
            await self.server.user.close()
            self.server.user.shutdown()
        log.info("replica stopped")

    async def _drain(self) -> None:
        self.server.state = pb.STOPPING
        if self.server.health is not None:  # health checkers see it go before it is gone
            await self.server.health.enter_graceful_shutdown()
        self._state_changed()
        deadline = time.monotonic() + self.graceful_timeout
        log.info("draining", ongoing=self.server.ongoing, timeout_s=self.graceful_timeout)
        while self.server.ongoing > 0 and time.monotonic() < deadline:
            await event_within(self.server.idle, min(0.1, deadline - time.monotonic()))
        # Let the session tell the controller we are stopping before we vanish.
        await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m weir.replica`; `python -m weir.replica --warm ...` (a
    spare, `weir.processes.spare_command`) waits for its arguments on stdin first."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [WARM_FLAG]:
        # Started ahead by a node agent: this module's imports are done, no user code is.
        assignment = wait_for_assignment(sys.stdin.buffer)
        if assignment is None:  # let go (or the agent died) before it had a replica
            return
        name_this_process(ASSIGNED_NAME)  # a replica now, no longer a spare
        enter(assignment)
        args = sys.argv[1:] = assignment.argv  # the user's code sees a cold start's argv
    parser = argparse.ArgumentParser(prog="python -m weir.replica")
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--etcd", default=os.environ.get("WEIR_ETCD_ENDPOINTS", ""))
    parser.add_argument("--controller", default="")
    parser.add_argument("--cluster-id", default="")
    parser.add_argument("--host", default="127.0.0.1")
    opts = parser.parse_args(args)
    configure_logging("replica", reconfigurable=True, replica_id=opts.replica_id)
    auth.pin_token()
    os.environ["WEIR_ETCD_ENDPOINTS"] = opts.etcd
    context.set_cluster(context.ClusterCoordinates(
        opts.etcd, tuple(a for a in opts.controller.split(",") if a)),
        subscriber=f"replica:{opts.replica_id}")
    locator = LeaderLocator(opts.etcd, [a for a in opts.controller.split(",") if a])
    replica = Replica(opts.replica_id, locator, opts.host)
    run_until_signalled(replica.run)
