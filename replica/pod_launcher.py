"""A `ReplicaLauncher` that runs each replica as a Kubernetes pod.

Design. The pod agent (`weir.replica.pod_agent`) is a node agent whose launcher is this
one: the agent still decides what to start and stop (`plan_node`); this class turns its
calls into API requests, and the pod's shape and the reading of its status are the pure
functions of `weir.replica.pod_spec`.

Failures it guards against:
- an agent restart: pods are found again by the cluster label and the replica-id
  annotation (`adopt`), never started twice;
- an API server that is away: `ended` then says nothing ended (replicas keep running and
  nothing is replaced on a guess), and `launch` fails with a message the agent records;
- a pod that never starts (unschedulable, image not found): `ended` reports it once the
  pod has been Pending for `pending_timeout_s`, or at once for a waiting reason no wait
  cures, and deletes it, so the leader places a replacement and `weir status` shows why.

The client is `lightkube`: typed, async, and small (httpx and its generated models), where
the official `kubernetes-asyncio` brings aiohttp and a generated client of every API
group; the four calls made here are all this needs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Pod

from weir.etcd.records import ReplicaRecord
from weir.replica.pod_spec import (
    CLUSTER_LABEL,
    PodSettings,
    label_value,
    pod_handle,
    pod_manifest,
    pod_name,
    pod_outcome,
    pod_replica_id,
)
from weir.runtime_env import PreparedEnv

log = structlog.get_logger("weir.replica.pod_launcher")

#: Pods asked of the API server per page when listing.
_PAGE = 500


class PodLauncher:
    """Creates, lists and deletes the replica pods of one pod agent (handles are
    `pod_handle(pod name)`)."""

    def __init__(self, client: AsyncClient, settings: PodSettings) -> None:
        self.client = client
        self.settings = settings
        #: Pod name -> when (monotonic) this launcher first saw it Pending.
        self._pending_since: dict[str, float] = {}

    async def launch(self, record: ReplicaRecord, env: PreparedEnv) -> int:
        """Create the replica's pod (an existing one of the same name is taken as ours:
        a create whose answer was lost)."""
        try:
            manifest = pod_manifest(record, env, self.settings)
        except ValueError as exc:
            raise OSError(str(exc)) from exc
        name = manifest["metadata"]["name"]
        try:
            pod = cast(Pod, Pod.from_dict(manifest))
            await self.client.create(pod)
        except ApiError as exc:
            if exc.status.code != 409:
                raise OSError(f"Kubernetes refused pod {name}: {_api_reason(exc)}") from exc
        except Exception as exc:  # httpx transport errors: the API server is away
            raise OSError(f"cannot reach the Kubernetes API to create pod {name}: {exc}"
                          ) from exc
        log.info("created pod", replica_id=record.replica_id, pod=name,
                 image=manifest["spec"]["containers"][0]["image"])
        return pod_handle(name)

    async def adopt(self, assigned: Mapping[str, ReplicaRecord],
                    known: Mapping[str, int]) -> dict[str, int]:
        """The assigned replicas whose pod exists and has not ended."""
        pods = await self._pods()
        if pods is None:
            return {}
        out = {}
        for pod in pods:
            rid = pod_replica_id(pod)
            if rid in assigned and pod_outcome(pod, 0.0, float("inf")) is None:
                out[rid] = pod_handle(pod["metadata"]["name"])
        return out

    async def ended(self, running: Mapping[str, ReplicaRecord]) -> dict[str, str]:
        """One list of our pods: the running replicas whose pod is gone, failed, or stuck
        Pending, with Kubernetes' reason; their pods are deleted."""
        pods = await self._pods()
        if pods is None:
            return {}
        by_name = {pod["metadata"]["name"]: pod for pod in pods}
        now = time.monotonic()
        out: dict[str, str] = {}
        for rid in running:
            name = pod_name(rid)
            pod = by_name.get(name)
            if pod is None:
                out[rid] = f"pod {name} is gone (deleted, or its node was lost)"
                continue
            pending = (pod.get("status") or {}).get("phase", "Pending") == "Pending"
            since = self._pending_since.setdefault(name, now) if pending else now
            if not pending:
                self._pending_since.pop(name, None)
            why = pod_outcome(pod, now - since, self.settings.pending_timeout_s)
            if why is not None:
                out[rid] = why
                await self._delete(name)
        self._pending_since = {n: t for n, t in self._pending_since.items() if n in by_name}
        return out

    async def kill(self, record: ReplicaRecord) -> None:
        """Delete the replica's pod at once (grace period 0: the agent kills, as SIGKILL
        does; a replica drains before this when the leader stops it in order)."""
        await self._delete(pod_name(record.replica_id))

    async def _delete(self, name: str) -> None:
        try:
            await self.client.delete(Pod, name, namespace=self.settings.namespace,
                                     grace_period=0)
            log.info("deleted pod", pod=name)
        except ApiError as exc:
            if exc.status.code != 404:
                log.warning("cannot delete pod", pod=name, error=_api_reason(exc))
        except Exception as exc:
            log.warning("cannot reach the Kubernetes API to delete pod", pod=name,
                        error=str(exc))

    async def _pods(self) -> list[dict[str, Any]] | None:
        """This cluster's replica pods as plain dicts (None: the API server is away)."""
        try:
            return [pod.to_dict() async for pod in self.client.list(
                Pod, namespace=self.settings.namespace, chunk_size=_PAGE,
                labels={CLUSTER_LABEL: label_value(self.settings.cluster_id)})]
        except Exception as exc:
            log.warning("cannot list replica pods; assuming they still run", error=str(exc))
            return None


def _api_reason(exc: ApiError) -> str:
    status = exc.status
    return f"{status.code} {status.reason or ''}: {status.message or ''}".strip(": ")
