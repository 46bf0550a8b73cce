"""weir.dataplane.request_id: Ray's shape, and no two processes sharing a sequence."""

from __future__ import annotations

import os

from weir.dataplane.request_id import new_request_id


def test_an_id_is_32_lowercase_hex_digits_and_ids_differ() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and i == i.lower() and int(i, 16) >= 0 for i in ids)


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    # A proxy's workers are forked from one process: they must not repeat each other's ids.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert status == 0
    assert len(child) == 32 and child != new_request_id()
