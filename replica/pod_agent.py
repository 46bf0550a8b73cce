"""The pod agent: a node agent whose replicas are Kubernetes pods.

Design. One pod agent per Weir cluster (a Deployment of one in the chart) registers one
node standing for what the release's namespace may use, and runs every replica placed on
it as a pod. One node per namespace rather than one per Kubernetes node, because
Kubernetes' scheduler already places pods on machines, and does it better: it knows
taints, affinities, the other tenants' pods and the cluster autoscaler, which adds a
machine when a replica's pod stays Pending. A node per Kubernetes node would have Weir's
placement bind pods to machines (`nodeName`), bypass all of that, and need an agent on
every machine (a DaemonSet) that can do nothing a pod spec cannot say.

Failure it guards against: the agent's pod is replaced (an upgrade, a drain). Replicas
are pods of their own and keep serving; the new agent registers the same node id and
adopts them by label before starting anything. Its lease TTL is longer than a host
agent's (10 s by default) so that a rescheduled agent is back before the leader counts
the node dead and places every replica again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import structlog
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.apps_v1 import Deployment

from weir.auth import cluster_token
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.records import NodeRecord
from weir.replica.node_agent import NodeAgent, with_previous_replicas
from weir.replica.pod_launcher import PodLauncher
from weir.replica.pod_spec import PodSettings, label_value
from weir.runtime import configure_logging, run_until_signalled

log = structlog.get_logger("weir.replica.pod_agent")

#: Where Kubernetes mounts a pod's namespace.
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_node_resources(num_cpus: float, num_gpus: float, memory: float,
                       custom: dict[str, float]) -> dict[str, float]:
    """What the pod node offers the leader's placement (memory in bytes; 0: unbounded,
    left out)."""
    out = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
    if memory > 0:
        out["memory"] = float(memory)
    out.update({str(k): float(v) for k, v in custom.items()})
    return out


def _namespace(explicit: str) -> str:
    if explicit:
        return explicit
    if os.environ.get("WEIR_NAMESPACE"):
        return os.environ["WEIR_NAMESPACE"]
    try:
        return _NAMESPACE_FILE.read_text().strip()
    except OSError:
        return "default"


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m weir.replica.pod_agent`."""
    parser = argparse.ArgumentParser(prog="python -m weir.replica.pod_agent")
    parser.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated")
    parser.add_argument("--namespace", default="",
                        help="where replica pods go (default: this pod's namespace)")
    parser.add_argument("--node-id", default="", help="default: kubernetes-<namespace>")
    parser.add_argument("--cluster-id", default="")
    parser.add_argument("--image", required=True,
                        help="the replicas' image when an app's runtime_env has no image_uri")
    parser.add_argument("--image-pull-policy", default="IfNotPresent")
    parser.add_argument("--num-cpus", type=float, default=64.0,
                        help="CPUs the namespace may give replicas")
    parser.add_argument("--num-gpus", type=float, default=0.0)
    parser.add_argument("--memory", type=float, default=0.0, help="bytes (0: no bound)")
    parser.add_argument("--resources", default="{}", help='JSON, e.g. {"accelerator": 2}')
    parser.add_argument("--labels", default="{}", help="JSON: the node's labels")
    parser.add_argument("--pod-labels", default="{}", help="JSON: extra labels of pods")
    parser.add_argument("--pod-env", default="{}", help="JSON: extra env of replicas")
    parser.add_argument("--owner-deployment", default="",
                        help="the Deployment that owns replica pods (deleted with it)")
    parser.add_argument("--service-account", default="")
    parser.add_argument("--node-selector", default="{}", help="JSON")
    parser.add_argument("--tolerations", default="[]", help="JSON list")
    parser.add_argument("--token-secret", default="",
                        help="NAME:KEY of the Secret holding the cluster token")
    parser.add_argument("--pending-timeout-s", type=float, default=600.0)
    parser.add_argument("--etcd-tls-secret", default="",
                        help="Secret with etcd's ca.crt, tls.crt, tls.key for replica pods")
    parser.add_argument("--etcd-credentials-secret", default="",
                        help="Secret with the etcd user (username, password) for replica pods")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--kube-server", default="",
                        help="API server URL (default: in-cluster, else ~/.kube/config)")
    opts = parser.parse_args(argv)
    namespace = _namespace(opts.namespace)
    node_id = opts.node_id or f"kubernetes-{namespace}"
    configure_logging("pod_agent", node_id=node_id)
    secret, _, key = opts.token_secret.partition(":")
    settings = PodSettings(
        namespace=namespace, cluster_id=opts.cluster_id, etcd_endpoints=opts.etcd,
        default_image=opts.image, image_pull_policy=opts.image_pull_policy,
        service_account=opts.service_account, node_selector=json.loads(opts.node_selector),
        tolerations=tuple(json.loads(opts.tolerations)), token_secret=(secret, key or "token"),
        token=cluster_token(), labels=json.loads(opts.pod_labels),
        env=json.loads(opts.pod_env), pending_timeout_s=opts.pending_timeout_s,
        etcd_tls_secret=opts.etcd_tls_secret,
        etcd_credentials_secret=opts.etcd_credentials_secret)
    node = NodeRecord(
        node_id=node_id, host=f"kubernetes/{namespace}",
        resources=pod_node_resources(opts.num_cpus, opts.num_gpus, opts.memory,
                                     json.loads(opts.resources)),
        labels={"weir.dev/kubernetes-namespace": label_value(namespace),
                **json.loads(opts.labels)},
        started_at=time.time(), pid=os.getpid())

    async def serve(signalled: asyncio.Event) -> None:
        # from_server() leaves the user out, which lightkube 1.0's client then refuses.
        config = (KubeConfig.from_one(cluster=Cluster(server=opts.kube_server), user=User(),
                                      namespace=namespace)
                  if opts.kube_server else KubeConfig.from_env())
        client = AsyncClient(config=config, namespace=namespace)
        pod_settings = settings
        if opts.owner_deployment:
            owner = await client.get(Deployment, opts.owner_deployment, namespace=namespace)
            assert owner.metadata is not None
            pod_settings = replace(settings, owner={
                "apiVersion": "apps/v1", "kind": "Deployment",
                "name": opts.owner_deployment, "uid": owner.metadata.uid or ""})
        store = EtcdStore(opts.etcd)
        await store.connect()
        start = await with_previous_replicas(store, node)
        try:
            # Each pod fetches its own packages (weir.replica.pod_replica): this agent's
            # disk is not the replicas'.
            await NodeAgent(store, start, PodLauncher(client, pod_settings), opts.lease_ttl,
                            replicas_fetch_code=True).run(signalled)
        finally:
            await store.close()
            await client.close()

    run_until_signalled(serve)


if __name__ == "__main__":
    main()
