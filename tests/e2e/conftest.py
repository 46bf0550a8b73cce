"""A real local cluster per test module: etcd, controller and proxy processes on free
loopback ports. Teardown stops it and checks by PID that nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from weir import context
from weir.cli.admin_client import AdminClient
from weir.cli.cluster_state import ClusterInfo
from weir.cli.local_cluster import LocalCluster
from weir.processes import pid_runs, replica_pids, spare_pids

ROOT = Path(__file__).resolve().parents[2]


class RunningCluster:
    """A started LocalCluster with helpers for tests."""

    def __init__(self, cluster: LocalCluster, info: ClusterInfo) -> None:
        self.cluster = cluster
        self.info = info
        self.url = f"http://{info.http}"

    @property
    def client(self) -> AdminClient:
        """An admin client of every controller alive now."""
        return AdminClient(self.info.address, timeout=10, token=self.info.token)

    def set_root_path(self, root: str) -> None:
        """Deploy http_options with this root_path (on the cluster's own host and port; a
        partial deploy: the apps stay)."""
        host, port = self.info.http.rsplit(":", 1)
        self.client.deploy({"applications": [], "http_options": {
            "host": host, "port": int(port), "root_path": root}}, partial=True)

    def get(self, path: str = "/", **kw: Any) -> requests.Response:
        """GET through the proxy."""
        return requests.get(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def deploy_app(self, name: str, import_path: str, **extra: Any) -> None:
        """Deploy one app by import path (examples and tests are importable from ROOT)."""
        app = {"name": name, "import_path": import_path, "route_prefix": f"/{name}",
               "runtime_env": {"working_dir": str(ROOT)}, **extra}
        self.client.deploy({"applications": [app]}, partial=True)

    def app_status(self, name: str) -> dict[str, Any]:
        """The app's status document ({} if absent)."""
        return self.client.get_status(name).get("applications", {}).get(name, {})  # type: ignore[no-any-return]

    def wait_status(self, name: str, want: str, timeout: float = 60) -> dict[str, Any]:
        """Poll until the app's status is `want`; fail at once on an unexpected failure."""

        def check() -> dict[str, Any] | None:
            status = self.app_status(name)
            current = status.get("app_status", {}).get("status")
            if current == "DEPLOY_FAILED" and want != current:
                raise AssertionError(f"app {name} failed: {status['app_status']['message']}")
            return status if current == want else None

        return wait_for(check, timeout, f"app {name} to be {want}")  # type: ignore[no-any-return]


@contextlib.contextmanager
def driver_connected(cluster: RunningCluster) -> Iterator[RunningCluster]:
    """Point this test process's SDK (`serve.*`, handles) at `cluster` for the block."""
    from weir import serve

    os.environ["WEIR_ADDRESS"] = cluster.info.address
    os.environ["WEIR_ETCD_ENDPOINTS"] = cluster.info.etcd_endpoints
    context.reset()
    serve._session.client = None  # connect afresh, to this cluster
    try:
        yield cluster
    finally:
        serve._session.client = None
        context.reset()
        os.environ.pop("WEIR_ADDRESS")
        os.environ.pop("WEIR_ETCD_ENDPOINTS")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` until truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def start_cluster(tmp_path_factory: pytest.TempPathFactory,
                  **options: Any) -> Iterator[RunningCluster]:
    """Start a local cluster on free ports, yield it, stop it and check nothing is left."""
    os.environ["WEIR_HOME"] = str(tmp_path_factory.mktemp("weir-home"))
    # The tests were written against hypercorn; `auto` (uvicorn where installed) is the
    # product's default, covered by the tests that ask for it.
    options.setdefault("http_server", "hypercorn")
    local = LocalCluster(http_port=0, admin_port=0, **options)
    info = local.start()
    try:
        yield RunningCluster(local, info)
    finally:
        local.stop()
        left = [p for p in local.spawned_pids if pid_runs(p)] + replica_pids(
            info.cluster_id) + spare_pids(info.cluster_id)
        assert not left, f"processes left behind: {left}"
        assert not os.path.exists(info.temp_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """One local cluster for the module."""
    yield from start_cluster(tmp_path_factory)
