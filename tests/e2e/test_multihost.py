"""Three hosts in network namespaces: start, join, spread, lose a host, re-place.

Host A runs `weir start --host` (etcd, controller, proxy, node agent); B and C run
`weir start --join` (node agent and proxy). Each offers 2 CPUs; 4 replicas asking 1 CPU
each spread over the hosts. Then every process of host C is SIGKILLed: its replicas must
run on A and B within 10 s, and requests through A's and B's proxies fail only where they
were in flight on C.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from tests.e2e import netns
from tests.e2e.conftest import ROOT, wait_for
from tests.e2e.test_ha import Load
from weir.auth import TOKEN_METADATA_KEY
from weir.cli.admin_client import AdminClient
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

WHY_NOT = netns.available()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")

APP = "spread"
CONFIG = {"applications": [{
    "name": APP, "route_prefix": f"/{APP}", "import_path": "tests.e2e.apps.ha_app:app",
    "runtime_env": {"working_dir": str(ROOT)},
    "deployments": [{"name": "Steady", "num_replicas": 4,
                     "ray_actor_options": {"num_cpus": 1}}]}]}


class Cluster:
    """The three hosts, each with its own WEIR_HOME."""

    def __init__(self, net: netns.Network, home: Path) -> None:
        self.net = net
        self.a, self.b, self.c = (net.add_host() for _ in range(3))
        self.homes = {h.name: home / h.name for h in (self.a, self.b, self.c)}
        self.token = ""

    def weir(self, host: netns.Host, *args: str, ok: bool = True) -> str:
        env = {**os.environ, "WEIR_HOME": str(self.homes[host.name])}
        env.pop("WEIR_NUM_CPUS", None)
        env.pop("WEIR_ADDRESS", None)
        proc = subprocess.run(host.command(sys.executable, "-m", "weir.cli", *args),
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if not ok:
            assert proc.returncode != 0, f"weir {' '.join(args)} on {host.name} succeeded"
            return proc.stderr
        assert proc.returncode == 0, f"weir {' '.join(args)} on {host.name}: {proc.stderr}"
        return proc.stdout

    @property
    def admin(self) -> AdminClient:
        return AdminClient(f"{self.a.address}:9500", token=self.token)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Live nodes by host address, with their replicas."""
        return {n["address"]: n for n in self.admin.get_status()["nodes"]
                if n["state"] == "ALIVE"}

    def running_by_host(self) -> dict[str, int]:
        """RUNNING replicas of the app per host address."""
        node_host = {n["node_id"]: n["address"] for n in self.admin.get_status()["nodes"]}
        out: dict[str, int] = {}
        for r in self.admin.list_replicas():
            if r["app"] == APP and r["state"] == "RUNNING":
                host = node_host.get(r["node_id"], "?")
                out[host] = out.get(host, 0) + 1
        return out


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with netns.Network() as net:
        c = Cluster(net, tmp_path)
        out = c.weir(c.a, "start", "--host", c.a.address, "--num-cpus", "2", "--fresh")
        join = f"{c.a.address}:2379"
        assert f"weir start --join {join}" in out, out
        # Off loopback a cluster is never open: a token was made and printed with the join.
        c.token = out.split("--token ", 1)[1].split()[0]
        refused = c.weir(c.b, "start", "--join", join, "--host", c.b.address, "--token",
                         "wrong", ok=False)
        assert "cannot join" in refused and "token" in refused, refused
        for host in (c.b, c.c):
            c.weir(host, "start", "--join", join, "--host", host.address, "--num-cpus", "2",
                   "--token", c.token)
        wait_for(lambda: len(c.nodes()) == 3, 20, "three nodes")
        yield c


def test_spread_then_lose_a_host(cluster: Cluster) -> None:
    c = cluster
    c.admin.deploy(CONFIG)
    wait_for(lambda: sum(c.running_by_host().values()) == 4, 60, "4 replicas running")
    spread = c.running_by_host()
    assert len(spread) >= 2, f"replicas all on one host: {spread}"
    on_c = spread.get(c.c.address, 0)
    assert on_c >= 1, f"nothing placed on host C to lose: {spread}"

    with Load(f"http://{c.a.address}:8000/{APP}", clients=2) as via_a, \
            Load(f"http://{c.b.address}:8000/{APP}", clients=2) as via_b:
        via_a.more(50)
        via_b.more(50)
        assert not via_a.failures and not via_b.failures
        t0 = time.monotonic()
        killed = c.c.kill_all()
        assert killed

        def replaced() -> bool:
            now = c.running_by_host()
            return sum(now.values()) == 4 and c.c.address not in now

        wait_for(replaced, 30, "host C's replicas running on A and B")
        replaced_s = time.monotonic() - t0
        via_a.more(50)
        via_b.more(50)
    failed = len(via_a.failures) + len(via_b.failures)
    sent = via_a.sent + via_b.sent
    print(f"\n[multihost] re-placed {on_c} replica(s) of host C in {replaced_s:.2f} s; "
          f"{failed} failed of {sent} requests")
    assert replaced_s <= 10.0, f"re-placing took {replaced_s:.2f} s"
    # Only calls in flight on C's replicas may fail: at most one per client.
    assert failed <= via_a.clients + via_b.clients, via_a.failures + via_b.failures
    dead = [n for n in c.admin.get_status()["nodes"] if n["state"] == "DEAD"]
    assert [n["address"] for n in dead] == [c.c.address]


def test_a_replica_refuses_a_caller_without_the_token(cluster: Cluster) -> None:
    c = cluster
    c.admin.deploy(CONFIG)
    wait_for(lambda: sum(c.running_by_host().values()) == 4, 60, "4 replicas running")
    address = next(r["address"] for r in c.admin.list_replicas() if r["state"] == "RUNNING")
    with grpc.insecure_channel(address) as channel:
        call = pb_grpc.ReplicaStub(channel).Call
        with pytest.raises(grpc.RpcError) as refused:
            call(pb.CallRequest(request_id="x", method="__call__",
                                pickled_args=pickle.dumps(((), {}))), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            call(pb.CallRequest(request_id="y"), timeout=5,
                 metadata=((TOKEN_METADATA_KEY, "not-the-token"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


WHERE_CODE = '''
import importlib
import os

from weir import serve


@serve.deployment(num_replicas=6, ray_actor_options={"num_cpus": 1})
class Where:
    def __call__(self, request):
        module = importlib.import_module("where_app")
        return {"cwd": os.getcwd(), "file": module.__file__}


app = Where.bind()
'''


def test_code_reaches_every_host_as_a_package(cluster: Cluster, tmp_path: Path) -> None:
    """The working_dir exists only until the deploy returns: every host's replicas run
    from that host's own package cache (fetched from the controller on host A)."""
    c = cluster
    code = tmp_path / "code"
    code.mkdir()
    (code / "where_app.py").write_text(WHERE_CODE)
    c.admin.deploy({"applications": [{"name": "where", "route_prefix": "/where",
                                      "import_path": "where_app:app",
                                      "runtime_env": {"working_dir": str(code)}}]})
    (code / "where_app.py").unlink()
    code.rmdir()
    wait_for(lambda: sum(r["state"] == "RUNNING" for r in c.admin.list_replicas()) == 6, 60,
             "6 replicas running")
    package = c.admin.get_config("where")["runtime_env"]["working_dir"].rsplit("/", 1)[1]
    seen: dict[str, str] = {}

    def every_host() -> bool:
        answer = requests.get(f"http://{c.a.address}:8000/where", timeout=10).json()
        seen[answer["cwd"]] = answer["file"]
        return len(seen) == 3

    wait_for(every_host, 30, "answers from the three hosts' caches")
    for cwd, file in seen.items():
        # Three caches, one a host: host A's node agent shares its controller's (the
        # package is there already), B's and C's fetched it under their log dirs.
        assert cwd.endswith(f"/packages/{package}"), cwd
        assert file == f"{cwd}/where_app.py" and Path(file).read_text() == WHERE_CODE
