"""Replicas as Kubernetes pods, as plain data: the pod a replica runs in, and what a pod's
status says of the replica. Pure functions; `weir.replica.pod_launcher` does the I/O.

A replica's pod:
- is named from its replica id (lower-cased, `#` as `-`, and a hash of the exact id so two
  ids that read alike stay apart); the exact id rides in an annotation, since label values
  may hold neither `#` nor more than 63 characters;
- is labelled with its cluster, app, deployment, replica and version (label-safe forms),
  which is how a restarted agent finds (adopts) its pods and how `kubectl get pods -l`
  selects them;
- asks Kubernetes for what the leader reserved for it (`cpu`, `memory`, `nvidia.com/gpu`
  from the record's resources, which come from `ray_actor_options`); memory and GPUs are
  limits too, since Kubernetes never overcommits a GPU and a replica over its memory should
  be told so (`OOMKilled`) rather than slow its neighbours;
- never restarts its container (`restartPolicy: Never`): a replica that dies is replaced by
  the leader under a new id, exactly as a local process is, so the pod's end is the
  replica's end and its reason (`Evicted`, `OOMKilled`, `ImagePullBackOff`) is reported;
- fetches its app's code packages itself (`weir.replica.pod_replica`), as a node agent
  on another machine does, then runs the replica;
- binds and advertises its pod IP, which the downward API puts in WEIR_POD_IP and
  Kubernetes expands in the container's arguments (`$(WEIR_POD_IP)`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from weir.auth import TOKEN_ENV
from weir.etcd.endpoints import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    KEY_FILE_ENV,
    PASSWORD_ENV,
    USER_ENV,
)
from weir.etcd.records import ReplicaRecord
from weir.metrics import REPLICA_METRICS_PORT_ENV
from weir.runtime_env import PreparedEnv

#: Label and annotation keys of replica pods.
LABEL_PREFIX = "weir.dev/"
CLUSTER_LABEL = LABEL_PREFIX + "cluster"
APP_LABEL = LABEL_PREFIX + "app"
DEPLOYMENT_LABEL = LABEL_PREFIX + "deployment"
REPLICA_LABEL = LABEL_PREFIX + "replica"
VERSION_LABEL = LABEL_PREFIX + "version"
REPLICA_ID_ANNOTATION = LABEL_PREFIX + "replica-id"
#: The env var the downward API fills with the pod's IP; the replica binds it.
POD_IP_ENV = "WEIR_POD_IP"
#: Kubernetes' name of a whole NVIDIA GPU.
GPU_RESOURCE = "nvidia.com/gpu"
#: The module a replica pod runs: it fetches the app's code packages, then execs the
#: replica (`weir.replica.pod_replica`).
POD_REPLICA_MODULE = "weir.replica.pod_replica"
#: The container of a replica pod.
CONTAINER = "replica"
#: Where a replica finds etcd's TLS files (the chart mounts them at the same place).
ETCD_TLS_DIR = "/etc/weir/etcd-tls"

#: Waiting reasons that no wait will cure: the replica ends at once.
HOPELESS_WAITING = frozenset({"InvalidImageName", "CreateContainerConfigError",
                              "CreateContainerError", "ErrImageNeverPull"})


@dataclass(frozen=True)
class PodSettings:
    """What every replica pod of one pod agent shares (from the chart's values)."""

    namespace: str
    cluster_id: str
    etcd_endpoints: str
    #: The image when the app's runtime_env has no `image_uri`.
    default_image: str
    image_pull_policy: str = "IfNotPresent"
    #: The owner of every replica pod (an ownerReference: apiVersion, kind, name, uid), so
    #: that deleting the release deletes its replicas. Empty: none.
    owner: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    #: The Secret (name, key) holding the cluster token; empty name: passed by value.
    token_secret: tuple[str, str] = ("", "")
    #: The token when there is no Secret to name ("" turns the check off).
    token: str = ""
    #: Extra labels on every pod (the release's, say).
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Extra environment of every replica (etcd TLS file paths, say).
    env: Mapping[str, str] = field(default_factory=dict)
    #: How long a pod may stay Pending before its replica counts as failed (and replaced).
    pending_timeout_s: float = 600.0
    #: A Secret with etcd's TLS files (ca.crt, tls.crt, tls.key) to mount in every replica
    #: ("": etcd without client TLS files).
    etcd_tls_secret: str = ""
    #: A Secret with an etcd user (`username`, `password` keys) every replica logs in as
    #: ("": etcd checks no users).
    etcd_credentials_secret: str = ""


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both
    ends (a hash suffix keeps long or rewritten values apart)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    if clean == text and len(clean) <= 63:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[:54].rstrip('-._')}-{digest}".lstrip("-")


def pod_name(replica_id: str) -> str:
    """The pod of a replica: `weir-<app>-<deployment>-<suffix>-<hash>`, a DNS label of at
    most 63 characters (so it is also a valid hostname)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", replica_id.lower()).strip("-")
    digest = hashlib.sha256(replica_id.encode()).hexdigest()[:6]
    return f"weir-{clean[:47].rstrip('-')}-{digest}"


def pod_handle(name: str) -> int:
    """The agent's handle of a pod: a nonzero int stable across agent restarts."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:7], 16) or 1


def replica_labels(record: ReplicaRecord, cluster_id: str) -> dict[str, str]:
    """The labels that select a replica's pod."""
    return {
        "app.kubernetes.io/name": "weir",
        "app.kubernetes.io/component": "replica",
        CLUSTER_LABEL: label_value(cluster_id),
        APP_LABEL: label_value(record.app),
        DEPLOYMENT_LABEL: label_value(record.deployment),
        REPLICA_LABEL: label_value(record.replica_id),
        VERSION_LABEL: label_value(record.version),
    }


def container_resources(resources: Mapping[str, float]) -> dict[str, dict[str, str]]:
    """Requests (and limits for memory and GPUs) from a replica's Ray-style resources.
    Raises ValueError for a fractional GPU, which Kubernetes cannot give."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    cpus = float(resources.get("CPU", 0.0))
    if cpus > 0:
        requests["cpu"] = f"{math.ceil(cpus * 1000)}m"
    memory = float(resources.get("memory", 0.0))
    if memory > 0:
        requests["memory"] = limits["memory"] = str(math.ceil(memory))
    gpus = float(resources.get("GPU", 0.0))
    if gpus > 0:
        if gpus != int(gpus):
            raise ValueError(
                f"ray_actor_options.num_gpus={gpus:g}: Kubernetes gives whole GPUs "
                f"({GPU_RESOURCE}); ask for {math.ceil(gpus)} or run on a node agent")
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(int(gpus))
    out: dict[str, dict[str, str]] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def replica_args(record: ReplicaRecord, settings: PodSettings) -> list[str]:
    """The replica's arguments; Kubernetes expands `$(WEIR_POD_IP)` from the env."""
    return ["-m", POD_REPLICA_MODULE, "--replica-id", record.replica_id,
            "--etcd", settings.etcd_endpoints, "--cluster-id", settings.cluster_id,
            "--host", f"$({POD_IP_ENV})"]


def replica_env(env: PreparedEnv, settings: PodSettings) -> list[dict[str, Any]]:
    """The container's environment: the pod IP, etcd, the token, and the app's env."""
    out: list[dict[str, Any]] = [
        {"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "WEIR_ETCD_ENDPOINTS", "value": settings.etcd_endpoints},
    ]
    secret, key = settings.token_secret
    if secret:
        out.append({"name": TOKEN_ENV,
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    else:
        out.append({"name": TOKEN_ENV, "value": settings.token})
    if settings.etcd_tls_secret:
        out.extend({"name": name, "value": f"{ETCD_TLS_DIR}/{file}"}
                   for name, file in ((CA_FILE_ENV, "ca.crt"), (CERT_FILE_ENV, "tls.crt"),
                                      (KEY_FILE_ENV, "tls.key")))
    if settings.etcd_credentials_secret:
        out.extend({"name": name, "valueFrom": {"secretKeyRef": {
                        "name": settings.etcd_credentials_secret, "key": key}}}
                   for name, key in ((USER_ENV, "username"), (PASSWORD_ENV, "password")))
    app_env = {**settings.env, **env.env_vars}
    if env.sys_paths:
        app_env["PYTHONPATH"] = ":".join(env.sys_paths)
    taken = {e["name"] for e in out}  # Weir's own: an app's env does not override them
    out.extend({"name": k, "value": v} for k, v in sorted(app_env.items()) if k not in taken)
    return out


def scrape_annotations(metrics_port: str) -> dict[str, str]:
    """Prometheus' pod annotations for a replica serving metrics on a fixed port (the
    chart sets one); none for no port or a free one (0), which no scraper could guess."""
    if not metrics_port.isdigit() or int(metrics_port) == 0:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": metrics_port,
            "prometheus.io/path": "/"}


def pod_manifest(record: ReplicaRecord, env: PreparedEnv, settings: PodSettings
                 ) -> dict[str, Any]:
    """The Pod object of a replica. Raises ValueError when its resources cannot be asked
    of Kubernetes (the message says what to change)."""
    metadata: dict[str, Any] = {
        "name": pod_name(record.replica_id), "namespace": settings.namespace,
        "labels": {**settings.labels, **replica_labels(record, settings.cluster_id)},
        "annotations": {REPLICA_ID_ANNOTATION: record.replica_id,
                        **scrape_annotations(settings.env.get(REPLICA_METRICS_PORT_ENV, ""))},
    }
    if settings.owner:
        metadata["ownerReferences"] = [{**settings.owner, "blockOwnerDeletion": True}]
    container: dict[str, Any] = {
        "name": CONTAINER, "image": env.image_uri or settings.default_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python"], "args": replica_args(record, settings),
        "env": replica_env(env, settings),
        "resources": container_resources(record.resources),
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if env.cwd:
        container["workingDir"] = env.cwd
    volumes = []
    if settings.etcd_tls_secret:
        container["volumeMounts"] = [{"name": "etcd-tls", "mountPath": ETCD_TLS_DIR,
                                      "readOnly": True}]
        volumes.append({"name": "etcd-tls", "secret": {"secretName": settings.etcd_tls_secret}})
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if volumes:
        spec["volumes"] = volumes
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [dict(t) for t in settings.tolerations]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def pod_replica_id(pod: Mapping[str, Any]) -> str:
    """The replica a pod runs ("" if it is not a replica pod)."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(REPLICA_ID_ANNOTATION, ""))


def pod_outcome(pod: Mapping[str, Any], pending_for_s: float, pending_timeout_s: float
                ) -> str | None:
    """None while the pod runs or may still start; else why its replica is over, in
    Kubernetes' words (phase, reason, message, exit code)."""
    name = pod.get("metadata", {}).get("name", "?")
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return f"pod {name} is being deleted"
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    if phase in ("Failed", "Succeeded"):
        detail = _terminated(status) or _join(status.get("reason"), status.get("message"))
        return f"pod {name} {phase}" + (f": {detail}" if detail else "")
    if phase != "Pending":
        return None  # Running, or Unknown (its node is unreachable: it may come back)
    waiting = _waiting(status)
    if waiting and waiting[0] in HOPELESS_WAITING:
        return f"pod {name} cannot start: {_join(*waiting)}"
    if pending_for_s < pending_timeout_s:
        return None
    why = _join(*waiting) if waiting else _unscheduled(status)
    return (f"pod {name} Pending for {pending_for_s:.0f}s (limit {pending_timeout_s:.0f}s)"
            + (f": {why}" if why else ""))


def _join(*parts: Any) -> str:
    return ": ".join(str(p) for p in parts if p)


def _statuses(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in status.get("containerStatuses") or [] if s.get("name") == CONTAINER]


def _terminated(status: Mapping[str, Any]) -> str:
    for s in _statuses(status):
        done = (s.get("state") or {}).get("terminated")
        if done:
            return _join(done.get("reason"), done.get("message"),
                         f"exit code {done.get('exitCode')}")
    return ""


def _waiting(status: Mapping[str, Any]) -> tuple[str, str] | None:
    for s in _statuses(status):
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
            return str(waiting.get("reason")), str(waiting.get("message") or "")
    return None


def _unscheduled(status: Mapping[str, Any]) -> str:
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return _join(c.get("reason"), c.get("message"))
    return ""
