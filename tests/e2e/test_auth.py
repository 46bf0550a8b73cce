"""A cluster started with a token: everything inside it works, strangers are refused.

Inside: HTTP through the proxy to an ingress that calls two other deployments by handle,
a handle from this driver, the CLI. Outside: a raw gRPC call to a replica's data plane
carrying a pickle that would run code where it is unpickled, and calls to the controller,
are refused with UNAUTHENTICATED before anything is unpickled, and the refusal is logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import grpc
import pytest
import requests

from tests.e2e.conftest import ROOT, RunningCluster, driver_connected, start_cluster, wait_for
from weir import auth, serve
from weir.cli.admin_client import AdminClient
from weir.dataplane import frame_socket
from weir.etcd.server import free_port
from weir.exceptions import ClusterError
from weir.processes import pid_runs
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

TOKEN = "e2e-cluster-token"
REFUSAL_LOG = "refused a call without the cluster token"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A cluster with a token, the composed app on it; this process knows the token."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(auth.TOKEN_ENV, TOKEN)
        for cluster in start_cluster(tmp_path_factory, token=TOKEN):
            cluster.deploy_app("composed", "tests.e2e.apps.composed:app")
            cluster.wait_status("composed", "RUNNING")
            yield cluster


class Mkdir:
    """Unpickling this makes a directory: it stands for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weir.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_http_through_the_proxy_and_handles_between_deployments(secured: RunningCluster) -> None:
    response = secured.get("/composed?x=4")
    assert response.status_code == 200, response.text
    assert response.json() == {"doubled": 8, "incremented": 5, "chained": 9}
    status = secured.app_status("composed")
    assert all(d["status"] == "HEALTHY" for d in status["deployment_statuses"])


def test_a_handle_from_the_driver(secured: RunningCluster) -> None:
    with driver_connected(secured):
        handle = serve.get_deployment_handle("Doubler", "composed")
        assert handle.remote(21).result(timeout_s=10) == 42


def test_cli_status_with_the_token_and_without(secured: RunningCluster,
                                               tmp_path: Path) -> None:
    env = {**os.environ, "WEIR_HOME": str(tmp_path)}
    ok = cli("status", "--address", secured.info.address, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "composed" in ok.stdout
    wrong = cli("status", "--address", secured.info.address, "--token", "guess", env=env)
    assert wrong.returncode == 1
    assert "missing or wrong cluster token" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_a_pickle_sent_without_the_token_is_never_unpickled(secured: RunningCluster,
                                                           tmp_path: Path) -> None:
    replica = next(r for r in secured.client.list_replicas() if r["deployment"] == "Doubler")
    refused_marker, accepted_marker = tmp_path / "refused", tmp_path / "accepted"
    # The launcher's log file name for this replica (the record's log_file is not filled).
    log_file = (Path(secured.info.temp_dir) / "logs"
                / f"replica-{replica['replica_id'].replace('#', '_')}.log")
    logged_before = log_file.read_text().count(REFUSAL_LOG)

    def call(marker: Path, metadata: tuple[tuple[str, str], ...]) -> Any:
        request = pb.CallRequest(request_id="stranger", pickled_args=cloudpickle.dumps(
            ((Mkdir(marker),), {})))
        with grpc.insecure_channel(replica["address"]) as channel:
            return pb_grpc.ReplicaStub(channel).Call(request, timeout=10, metadata=metadata)

    for metadata in [(), ((auth.TOKEN_METADATA_KEY, "guess"),)]:
        with pytest.raises(grpc.RpcError) as info:
            call(refused_marker, metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert "missing or wrong cluster token" in info.value.details()  # type: ignore[attr-defined]
    wait_for(lambda: log_file.read_text().count(REFUSAL_LOG) == logged_before + 2, 10,
             "the replica to log both refusals")
    refusals = [line for line in log_file.read_text().splitlines() if REFUSAL_LOG in line]
    assert "/weir.Replica/Call" in refusals[-1] and "127.0.0.1" in refusals[-1]
    assert not refused_marker.exists()
    # The same call with the token is unpickled (and runs): the refusal above is what kept
    # the stranger's code from running.
    reply = call(accepted_marker, ((auth.TOKEN_METADATA_KEY, TOKEN),))
    assert accepted_marker.is_dir()
    assert reply.outcome == pb.USER_ERROR  # 2 * None: the user code ran after unpickling


def test_a_frame_socket_refuses_a_stranger_before_reading_a_frame(secured: RunningCluster,
                                                                  tmp_path: Path) -> None:
    """The replica's frame socket (its channel without gRPC) checks the token before it
    reads a frame: a pickle sent after a wrong token is never unpickled."""
    replica = next(r for r in secured.client.list_replicas() if r["deployment"] == "Doubler")
    host = replica["address"].rpartition(":")[0]
    with auth.sync_channel(replica["address"], token=TOKEN) as channel:
        port = pb_grpc.ReplicaStub(channel).ChannelSocket(pb.ChannelSocketRequest(),
                                                          timeout=10).port
    assert port
    refused_marker, accepted_marker = tmp_path / "refused", tmp_path / "accepted"

    def frame(marker: Path) -> pb.Frame:
        return pb.Frame(batch=[pb.Frame(call_id=1, request=pb.CallRequest(
            request_id="stranger", pickled_args=cloudpickle.dumps(((Mkdir(marker),), {}))))])

    async def stranger() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(frame_socket.encode(b"guess") + frame_socket.encode(
            frame(refused_marker).SerializeToString()))
        try:
            answer = await asyncio.wait_for(reader.read(), 10)  # until the replica closes it
        except ConnectionResetError:  # closed with our frame unread: a reset, not a FIN
            answer = b""
        writer.close()
        return answer

    async def insider() -> pb.Frame:
        call = await frame_socket.connect(host, port, 10, token=TOKEN)
        await call.write(frame(accepted_marker))
        reply = await asyncio.wait_for(anext(aiter(call)), 10)
        call.cancel()
        return reply

    assert asyncio.run(stranger()) == b""  # closed without a byte of answer
    with pytest.raises(frame_socket.FrameSocketClosed, match="refused the cluster token"):
        asyncio.run(frame_socket.connect(host, port, 10, token=""))
    assert not refused_marker.exists()
    reply = asyncio.run(insider())
    assert accepted_marker.is_dir()  # the same frame with the token is unpickled
    assert reply.batch[0].reply.outcome == pb.USER_ERROR  # 2 * None


def test_the_controller_refuses_strangers(secured: RunningCluster) -> None:
    with pytest.raises(ClusterError, match="missing or wrong cluster token"):
        AdminClient(secured.info.address, token="", timeout=5).get_status()
    with grpc.insecure_channel(secured.info.address) as channel:
        routes = pb_grpc.ControllerStub(channel).WatchRoutes(
            pb.WatchRoutesRequest(subscriber="stranger"), timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            next(routes)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_weir_start_keeps_the_token_for_later_commands(tmp_path: Path) -> None:
    env = {**os.environ, "WEIR_HOME": str(tmp_path)}
    for name in (auth.TOKEN_ENV, "WEIR_ADDRESS"):
        env.pop(name, None)
    port = free_port()
    started = cli("start", "--http-port", str(port), "--admin-port", "0", "--token", TOKEN,
                  env=env)
    assert started.returncode == 0, started.stderr
    state = tmp_path / "cluster.json"
    pids = json.loads(state.read_text())["pids"]
    try:
        assert state.stat().st_mode & 0o777 == 0o600
        assert "token: required" in started.stdout and TOKEN not in started.stdout
        status = cli("status", env=env)  # the token comes from the state file
        assert status.returncode == 0, status.stderr
        assert cli("status", env={**env, auth.TOKEN_ENV: "guess"}).returncode == 1
        assert requests.get(f"http://127.0.0.1:{port}/-/healthz", timeout=5).status_code == 200
    finally:
        stopped = cli("shutdown", "-y", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not [pid for pid in pids.values() if pid_runs(pid)]
