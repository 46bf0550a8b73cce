"""The bench's view of its simulation processes: their statuses summed, the nodes dealt
among them, and how many there are by default. Pure functions, no process."""

from __future__ import annotations

import pytest

from bench.control_plane_scale import node_count, sim_procs
from bench.sim_pool import aggregate, split_nodes


def status(wall: float, deployments: dict, adopted: dict) -> dict:
    return {"wall": wall, "replicas": sum(d["replicas"] for d in deployments.values()),
            "deployments": deployments, "adopted": adopted}


def test_statuses_sum_over_the_workers() -> None:
    a = status(10.0, {"sim0/Noop": {"replicas": 3, "running": {"v1": 2}}}, {"L1": 3})
    b = status(9.5, {"sim0/Noop": {"replicas": 2, "running": {"v1": 1, "v2": 1}},
                     "sim1/Noop": {"replicas": 1, "running": {}}}, {"L1": 1, "L2": 2})
    fleet = aggregate([a, b])
    assert fleet.replicas == 6
    assert fleet.deployment_replicas == {"sim0/Noop": 5, "sim1/Noop": 1}
    assert fleet.running == {"sim0/Noop": {"v1": 3, "v2": 1}, "sim1/Noop": {}}
    assert fleet.running_count() == 4 and fleet.running_count("sim1/Noop") == 0
    assert fleet.adopted == {"L1": 4, "L2": 2}
    # Only as fresh as the stalest worker: a failover counts once all spoke after it.
    assert fleet.as_of == 9.5


def test_no_status_is_an_empty_fleet() -> None:
    fleet = aggregate([])
    assert fleet.replicas == 0 and fleet.running_count() == 0 and fleet.as_of == 0.0


def test_nodes_are_dealt_to_every_worker() -> None:
    assert split_nodes(5, 2) == [[0, 2, 4], [1, 3]]
    with pytest.raises(ValueError, match="--nodes 2 is fewer than --sim-procs 3"):
        split_nodes(2, 3)


def test_default_processes_and_nodes() -> None:
    assert [sim_procs(n) for n in (50, 1250, 1251, 2000, 5000, 10_000)] == [1, 1, 2, 2, 4, 8]
    assert node_count(None, 1) == 10 and node_count(None, 4) == 12
    assert node_count(None, 8) == 16 and node_count(3, 8) == 3
