"""Proxy workers: each worker's command line and id, and two sockets on one port."""

from __future__ import annotations

from weir.proxy.workers import listening_socket, worker_argv, worker_id


def test_worker_argv_adds_the_index_and_drops_the_ready_file() -> None:
    argv = ["--etcd", "e:1", "--ready-file", "/r", "--proxy-workers", "3",
            "--worker-index=0", "--proxy-id", "p1"]
    assert worker_argv(argv, 2) == ["--etcd", "e:1", "--proxy-workers", "3",
                                    "--proxy-id", "p1", "--worker-index", "2"]
    assert worker_argv(["--ready-file=/r", "--etcd", "e"], 1) == [
        "--etcd", "e", "--worker-index", "1"]


def test_worker_id_is_the_proxys_with_an_index_when_there_are_several() -> None:
    assert worker_id("p1", 0, 1) == "p1"
    assert worker_id("p1", 0, 2) == "p1-w0"
    assert worker_id("p1", 1, 2) == "p1-w1"


def test_two_workers_sockets_listen_on_one_port() -> None:
    first = listening_socket("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port, reuse_port=True)
    try:
        first.listen()
        second.listen()
        assert second.getsockname()[1] == port
        lone = listening_socket("127.0.0.1", 0, reuse_port=False)
        lone.listen()
        try:
            try:
                listening_socket("127.0.0.1", lone.getsockname()[1], reuse_port=False).close()
            except OSError:
                pass
            else:
                raise AssertionError("a second socket bound a port taken without SO_REUSEPORT")
        finally:
            lone.close()
    finally:
        first.close()
        second.close()
