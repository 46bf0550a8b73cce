"""The admin API client used by the CLI and the SDK (and nothing else: they use only this).

Errors come out as ClusterError with one line a user can act on; a standby's redirect to
the leader (`weir.leader_redirect`) is followed transparently.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc

from weir import auth
from weir.backoff import Backoff
from weir.cli.locate import cluster_address
from weir.exceptions import ClusterError
from weir.leader_redirect import leader_from
from weir.packages.archive import MAX_PACKAGE_BYTES, PackageError
from weir.packages.shipping import local_code, pack_code, upload
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:9500"
#: Every etcd failure a controller reports names etcd this way (see weir.etcd.store).
ETCD_NAMED = "etcd at "


#: How long a call waits for a leader while the controllers elect one.
LEADER_WAIT_S = 6.0
#: While no controller leads, how often a call asks again: soon at first (a leader that
#: stops cleanly hands over within milliseconds), then every NO_LEADER_RETRY_S (one that
#: died leaves its lease to expire, seconds).
NO_LEADER_FIRST_RETRY_S = 0.02
NO_LEADER_RETRY_S = 0.2
#: Redirects one call follows before it counts as "no leader" (leadership moving on).
MAX_REDIRECTS = 3


class _NoLeader(Exception):
    """No controller leads right now (an election is under way)."""


class ConfigRejected(ClusterError):
    """The controller rejected a config; the message names the fields."""


class CodeNotShipped(ClusterError):
    """A config's code could not be packed or uploaded (its cause: a PackageError, such as
    PackageTooLarge); nothing was deployed."""


def resolve_address(explicit: str | None = None) -> str:
    """--address, else WEIR_ADDRESS, else a running `weir start` cluster's controllers,
    else the default. Several addresses are comma-separated."""
    return cluster_address(explicit) or DEFAULT_ADDRESS


class AdminClient:
    """A synchronous client of one cluster's admin API.

    `address` is one controller or several, comma-separated: a controller that cannot be
    reached is skipped for the next, and a standby's redirect to the leader is followed.
    Every call carries the cluster `token` (default `weir.auth.cluster_token()`).
    """

    def __init__(self, address: str, *, timeout: float = 30.0,
                 leader_wait_s: float = LEADER_WAIT_S, token: str | None = None) -> None:
        self.address = address
        self.token = auth.cluster_token(token)
        self.leader_wait_s = leader_wait_s
        self.addresses = [a.strip() for a in address.split(",") if a.strip()] or [address]
        self.timeout = timeout

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        # Between two leaders (a failover takes a fraction of a second to a lease TTL) the
        # call waits for the next one instead of failing.
        deadline = time.monotonic() + self.leader_wait_s
        backoff = Backoff(NO_LEADER_FIRST_RETRY_S, NO_LEADER_RETRY_S)
        while True:
            try:
                return self._call_once(method, request, timeout)
            except _NoLeader:
                if time.monotonic() >= deadline:
                    raise ClusterError(f"the cluster at {self.address} has no leader right "
                                       "now; try again in a few seconds") from None
            time.sleep(backoff.next())

    def _call_once(self, method: str, request: Any, timeout: float | None) -> Any:
        candidates = list(self.addresses)
        unreachable: list[str] = []
        redirects = 0
        while candidates:
            address = candidates.pop(0)
            with auth.sync_channel(address, token=self.token) as channel:
                stub = pb_grpc.ControllerStub(channel)
                try:
                    reply = getattr(stub, method)(request, timeout=timeout or self.timeout)
                except grpc.RpcError as exc:
                    error = exc
                else:
                    if address != self.addresses[0] and address in self.addresses:
                        # Remember who answered, so the next call goes there first.
                        self.addresses.remove(address)
                        self.addresses.insert(0, address)
                    return reply
            code, details = error.code(), error.details() or ""
            target = leader_from(error)
            if target is not None:
                redirects += 1
                if target and target != address and redirects <= MAX_REDIRECTS:
                    candidates.insert(0, target)
                    continue
                raise _NoLeader
            if code == grpc.StatusCode.UNAVAILABLE and ETCD_NAMED in details:
                raise ClusterError(f"the controller at {address} answered: {details}")
            if code == grpc.StatusCode.UNAVAILABLE:
                unreachable.append(f"{address} ({details})")
                continue
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise ClusterError(f"the controller at {address} refused the call: {details}")
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise ConfigRejected(details)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ClusterError(f"the controller at {address} did not answer in time")
            raise ClusterError(f"{code.name}: {details}")
        raise ClusterError(
            f"cannot reach the Weir controller at {'; '.join(unreachable)}. Is the cluster "
            "running (`weir start`)? Set --address or WEIR_ADDRESS to point at another one.")

    def deploy(self, config: dict[str, Any], *, partial: bool = False,
               pickled_apps: dict[str, bytes] | None = None, dry_run: bool = False,
               ship_code: bool = True,
               max_package_bytes: int = MAX_PACKAGE_BYTES) -> pb.DeployReply:
        """Replace (or with partial, add to) the goal state.

        With `ship_code`, local working_dir and py_modules paths are packed, uploaded to
        every controller (but for a dry run) and sent as package URIs
        (`weir.packages.shipping`); CodeNotShipped if one cannot be, before anything changes.
        """
        if ship_code and local_code(config):
            config = self._ship_code(config, max_package_bytes, upload_packages=not dry_run)
        return self._call("Deploy", pb.DeployRequest(
            config_json=json.dumps(config), partial=partial, pickled_apps=pickled_apps or {},
            dry_run=dry_run))

    def _ship_code(self, config: dict[str, Any], max_bytes: int, *,
                   upload_packages: bool) -> dict[str, Any]:
        try:
            rewritten, packages = pack_code(config, max_bytes=max_bytes)
            if packages and upload_packages:
                upload(packages, self.controller_addresses(), token=self.token)
        except PackageError as exc:
            raise CodeNotShipped(str(exc)) from exc
        return rewritten

    def controller_addresses(self) -> list[str]:
        """Every controller of the cluster (as etcd lists them), else those given."""
        listed = [c.get("address", "") for c in self.get_status().get("controllers", [])]
        return [a for a in listed if a] or list(self.addresses)

    def get_config(self, name: str = "", *, history: bool = False,
                   history_limit: int = 0) -> Any:
        """The goal as the controller holds it (or the history of accepted configs: the
        latest `history_limit` of them, 0 for all kept)."""
        reply = self._call("GetConfig", pb.GetConfigRequest(name=name, history=history,
                                                            history_limit=history_limit))
        return json.loads(reply.config_json)

    def get_status(self, name: str = "") -> dict[str, Any]:
        """Applications, controllers and proxies."""
        reply = self._call("GetStatus", pb.GetStatusRequest(name=name))
        return json.loads(reply.status_json)  # type: ignore[no-any-return]

    def delete_apps(self, names: list[str]) -> None:
        """Remove applications."""
        self._call("DeleteApps", pb.DeleteAppsRequest(names=names))

    def shutdown(self) -> None:
        """Stop every replica and every controller."""
        self._call("Shutdown", pb.ShutdownRequest(), timeout=max(self.timeout, 40.0))

    def get_events(self, limit: int = 0) -> list[dict[str, Any]]:
        """The cluster's recent events (deploys, failures, failovers), oldest first."""
        reply = self._call("GetEvents", pb.GetEventsRequest(limit=limit))
        return json.loads(reply.events_json)  # type: ignore[no-any-return]

    def list_replicas(self) -> list[dict[str, Any]]:
        """Every replica with state, PID and address."""
        reply = self._call("ListReplicas", pb.ListReplicasRequest())
        return json.loads(reply.replicas_json)  # type: ignore[no-any-return]
