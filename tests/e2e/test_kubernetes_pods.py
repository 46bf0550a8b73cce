"""Replicas as pods: a real cluster (etcd, controller, proxy), a real pod agent, and a fake
Kubernetes API server whose test kubelet runs each pod's container as a local process.
etcd checks users: the servers log in from their environment, replica pods with the user
of a Secret (the kubelet gives a pod only what its spec says, as a container runtime does).

The pod spec alone must start a replica that registers and serves through the proxy; a
deleted or evicted pod's replica is replaced; a restarted pod agent adopts its pods; a pod
that stays Pending shows Kubernetes' reason in `weir status`. The local machine's node
offers no CPU, so every replica goes to the pod node.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ROOT, RunningCluster, start_cluster, wait_for
from tests.e2e.kube_fake import FakeApiServer, TestKubelet, fake_kubernetes
from tests.sdk.etcd.secured_etcd import ROOT_USER, enable_auth
from weir.auth import new_token
from weir.cli.local_cluster import NodeOptions
from weir.etcd.server import EtcdServer
from weir.processes import spawn, terminate
from weir.replica.pod_spec import APP_LABEL, REPLICA_ID_ANNOTATION

pytest.importorskip("lightkube",
                    reason="the pod agent needs lightkube: pip install -e '.[kubernetes]'")

NAMESPACE = "weir-test"
OWNER = "weir-pod-agent"
APP = "pods"


ETCD_PASSWORD = "pods-s3cret"
#: The Secret replica pods read the etcd user from (the chart's credentialsSecret).
ETCD_USER_SECRET = "etcd-user"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A cluster with a token, on an etcd that checks users, whose own machine offers no
    CPU to replicas. Its servers log in from the environment (as the chart's Deployments
    do); replica pods get the user from a Secret, through the pod agent."""
    with EtcdServer(str(tmp_path_factory.mktemp("auth-etcd"))) as etcd:
        enable_auth(etcd, ETCD_PASSWORD)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WEIR_ETCD_USER", ROOT_USER)
            env.setenv("WEIR_ETCD_PASSWORD", ETCD_PASSWORD)
            yield from start_cluster(tmp_path_factory, token=new_token(), etcd=etcd.endpoint,
                                     node=NodeOptions(num_cpus=0, num_gpus=0))


class PodAgent:
    """`python -m weir.replica.pod_agent` against the fake API server."""

    def __init__(self, cluster: RunningCluster, api: FakeApiServer, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "weir.replica.pod_agent",
                    "--etcd", cluster.info.etcd_endpoints, "--kube-server", api.url,
                    "--namespace", NAMESPACE, "--cluster-id", cluster.info.cluster_id,
                    "--image", "weir:test", "--num-cpus", "4", "--num-gpus", "1",
                    "--owner-deployment", OWNER, "--token-secret", "weir-token:token",
                    "--etcd-credentials-secret", ETCD_USER_SECRET,
                    "--pending-timeout-s", "1", "--lease-ttl", "3"]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn(self.cmd, log_path=self.log, cwd=ROOT)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)
            self.proc = None


def running(cluster: RunningCluster, app: str = APP) -> set[str]:
    return {r["replica_id"] for r in cluster.client.list_replicas()
            if r["app"] == app and r["state"] == "RUNNING"}


def replica_pods(api: FakeApiServer, app: str = APP) -> dict[str, dict[str, Any]]:
    """The app's live replica pods by replica id."""
    return {p["metadata"]["annotations"][REPLICA_ID_ANNOTATION]: p
            for p in api.pod_list(NAMESPACE) if p["metadata"]["labels"][APP_LABEL] == app}


def test_replicas_run_as_pods_and_are_replaced(cluster: RunningCluster,
                                               tmp_path: Path) -> None:
    secrets = {"weir-token": {"token": cluster.info.token},
               ETCD_USER_SECRET: {"username": ROOT_USER, "password": ETCD_PASSWORD}}
    with fake_kubernetes(NAMESPACE, tmp_path / "pods", secrets) as (api, kubelet):
        owner_uid = api.add_deployment(NAMESPACE, OWNER)
        agent = PodAgent(cluster, api, tmp_path / "pod-agent.log")
        agent.start()
        try:
            # Deployed first, so that its pod starts beside the others.
            shipped_code = _deploy_shipped_code(cluster, tmp_path)
            _serve_replace_adopt(cluster, api, kubelet, agent, owner_uid)
            _shipped_code_reaches_pods(cluster, kubelet, shipped_code)
            _pending_shows_kubernetes_reason(cluster, api)
        finally:
            agent.stop()


def _serve_replace_adopt(cluster: RunningCluster, api: FakeApiServer, kubelet: TestKubelet,
                         agent: PodAgent, owner_uid: str) -> None:
    cluster.client.deploy({"applications": [{
        "name": APP, "route_prefix": f"/{APP}", "import_path": "tests.e2e.apps.ha_app:app",
        "runtime_env": {"working_dir": str(ROOT)},
        "deployments": [{"name": "Steady", "num_replicas": 2,
                         "ray_actor_options": {"num_cpus": 1}}]}]}, partial=True,
        # Code in the image: the test kubelet runs pods from this checkout.
        ship_code=False)
    cluster.wait_status(APP, "RUNNING", timeout=30)
    wait_for(lambda: len(running(cluster)) == 2, 20, "two RUNNING replicas")
    pods = replica_pods(api)
    assert set(pods) == running(cluster)
    for pod in pods.values():
        labels = pod["metadata"]["labels"]
        assert labels["weir.dev/app"] == APP and labels["weir.dev/deployment"] == "Steady"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == owner_uid
        assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1000m"}
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["WEIR_ETCD_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == ETCD_USER_SECRET
    # The replicas the kubelet started from the pod specs serve through the real proxy.
    pids = {proc.pid for proc in kubelet.procs.values()}
    answered = {cluster.get(f"/{APP}").json()["pid"] for _ in range(20)}
    assert answered and answered <= pids

    # A deleted pod: its replica is replaced by a new pod.
    deleted = next(iter(pods))
    httpx.delete(f"{api.url}/api/v1/namespaces/{NAMESPACE}/pods/"
                 f"{pods[deleted]['metadata']['name']}")
    wait_for(lambda: len(running(cluster)) == 2 and deleted not in running(cluster), 20,
             "the deleted pod's replica to be replaced")
    assert set(replica_pods(api)) == running(cluster)

    # An evicted pod, then a container that dies (killed, as by the OOM killer): status
    # says what Kubernetes said of each until they are replaced, and their pods are cleaned
    # up. (The two replacements overlap, to keep the test short.)
    evicted, crashed = sorted(wait_for(lambda: both_running(cluster), 20, "two RUNNING"))
    kubelet.evict(pods_by_id(api)[evicted])
    message = wait_for(lambda: status_naming(cluster, "Evicted"), 10, "Evicted in status")
    assert f"replica {evicted} died unexpectedly: pod " in message
    assert "Failed: Evicted: The node was low on resource: memory." in message
    kubelet.procs[pods_by_id(api)[crashed]].kill()
    message = wait_for(lambda: status_naming(cluster, "exit code"), 10, "the exit in status")
    assert f"replica {crashed} died unexpectedly: pod " in message
    assert "Failed: Error: exit code 137" in message
    wait_for(lambda: len(running(cluster)) == 2 and not {evicted, crashed} & running(cluster),
             30, "the evicted and the crashed pods' replicas to be replaced")
    wait_for(lambda: not {evicted, crashed} & set(replica_pods(api)), 5,
             "the ended pods to be deleted")
    wait_for(lambda: not status_naming(cluster, "died"), 10, "the message to clear")
    assert cluster.get(f"/{APP}").status_code == 200

    # A restarted agent adopts its pods: no new pod, the same replicas.
    cluster.wait_status("shipped", "RUNNING", timeout=30)  # every pod up before the restart
    created, before = len(api.created), running(cluster)
    assert agent.proc is not None
    agent.proc.kill()
    agent.proc.wait(5)
    agent.start()
    wait_for(lambda: agent.log.read_text().count("adopted replica") >= 3, 15,
             "the restarted agent to adopt all three pods (two of the app, the shipped one)")
    wait_for(lambda: "node agent up" in agent.log.read_text().rsplit("adopted", 1)[0], 5,
             "the agent's log")
    assert running(cluster) == before and len(api.created) == created
    assert cluster.get(f"/{APP}").status_code == 200


SHIPPED_APP = """
import os
from weir import serve

@serve.deployment
class Shipped:
    def __call__(self, request):
        return {"pid": os.getpid(), "cwd": os.getcwd()}

app = Shipped.bind()
"""


def _deploy_shipped_code(cluster: RunningCluster, tmp_path: Path) -> Path:
    """An app deployed from a local working_dir that the kubelet's processes cannot import:
    `deploy` packs and uploads it, and the pod fetches it from a controller."""
    code = tmp_path / "shipped-code"
    code.mkdir()
    (code / "shipped_pod_app.py").write_text(SHIPPED_APP)
    cluster.client.deploy({"applications": [{
        "name": "shipped", "route_prefix": "/shipped", "import_path": "shipped_pod_app:app",
        "runtime_env": {"working_dir": str(code)},
        "deployments": [{"name": "Shipped", "ray_actor_options": {"num_cpus": 1}}]}]},
        partial=True)
    return code


def _shipped_code_reaches_pods(cluster: RunningCluster, kubelet: TestKubelet,
                               code: Path) -> None:
    cluster.wait_status("shipped", "RUNNING", timeout=30)
    answer = cluster.get("/shipped").json()
    assert answer["pid"] in {proc.pid for proc in kubelet.procs.values()}
    # The replica runs in the pod's own copy of the package (fetched into its WEIR_HOME),
    # not in the folder it was deployed from, which no pod's process has on its path.
    cwd = Path(answer["cwd"]).resolve()
    assert (cwd / "shipped_pod_app.py").read_text() == SHIPPED_APP and cwd != code
    assert kubelet.log_dir in cwd.parents and cwd.parent.name == "packages"
    cluster.client.delete_apps(["shipped"])


def both_running(cluster: RunningCluster) -> set[str]:
    """The two RUNNING replicas of the app, or an empty set while there are not two."""
    now = running(cluster)
    return now if len(now) == 2 else set()


def status_naming(cluster: RunningCluster, word: str, app: str = APP) -> str:
    """The app's status message if it names `word`, else ""."""
    message = str(cluster.app_status(app).get("app_status", {}).get("message", ""))
    return message if word in message else ""


def pods_by_id(api: FakeApiServer) -> dict[str, str]:
    return {rid: p["metadata"]["name"] for rid, p in replica_pods(api).items()}


def _pending_shows_kubernetes_reason(cluster: RunningCluster, api: FakeApiServer) -> None:
    cluster.client.deploy({"applications": [{
        "name": "gpu", "route_prefix": "/gpu", "import_path": "tests.e2e.apps.ha_app:app",
        "runtime_env": {"working_dir": str(ROOT)},
        "deployments": [{"name": "Steady", "num_replicas": 1,
                         "ray_actor_options": {"num_cpus": 0, "num_gpus": 1}}]}]},
        partial=True, ship_code=False)

    message = wait_for(lambda: status_naming(cluster, "Unschedulable", "gpu"), 20,
                       "the Pending pod's reason in status")
    assert "Insufficient nvidia.com/gpu" in message and "Pending for" in message
    # The stuck pod was deleted and its replica replaced by a new pod (Pending in turn).
    wait_for(lambda: sum(n.startswith("weir-gpu-") for n in api.created) >= 2, 15,
             "a new pod in place of the one stuck Pending")
    cluster.client.delete_apps(["gpu"])
    wait_for(lambda: not any(p["spec"]["containers"][0]["resources"].get("limits")
                             for p in api.pod_list(NAMESPACE)), 10, "the GPU pod to go")
