"""Placement by resources: a pure function, tested with plain values only."""

from __future__ import annotations

import pytest

from weir.controller.placement import (
    NoFit,
    PlacedReplica,
    Placement,
    ReplicaAsk,
    node_view,
    place,
    place_many,
    replica_request,
)

KEY = ("app", "D")
OTHER = ("app", "E")
GiB = 2**30


# -- what a replica asks for --------------------------------------------------------------

def test_a_replica_reserves_one_cpu_by_default() -> None:
    assert replica_request(None) == {"CPU": 1.0}
    assert replica_request({}) == {"CPU": 1.0}
    assert replica_request({"runtime_env": {"env_vars": {"A": "1"}}}) == {"CPU": 1.0}


def test_request_reads_ray_actor_options() -> None:
    request = replica_request({"num_cpus": 2, "num_gpus": 0.5, "memory": 1.5 * GiB + 0.7,
                               "resources": {"TPU": 4, "disk_ssd": 0.25}})
    assert request == {"CPU": 2.0, "GPU": 0.5, "memory": float(3 * GiB // 2), "TPU": 4.0,
                       "disk_ssd": 0.25}


def test_zero_amounts_are_left_out() -> None:
    assert replica_request({"num_cpus": 0, "num_gpus": 0, "resources": {"X": 0}}) == {}


def test_accelerator_type_is_a_sliver_of_a_custom_resource() -> None:
    assert replica_request({"accelerator_type": "A100"}) == {
        "CPU": 1.0, "accelerator_type:A100": 0.001}


@pytest.mark.parametrize(("options", "field"), [
    ({"num_cpus": -1}, "ray_actor_options.num_cpus"),
    ({"num_cpus": "2"}, "ray_actor_options.num_cpus"),
    ({"num_cpus": True}, "ray_actor_options.num_cpus"),
    ({"num_gpus": float("nan")}, "ray_actor_options.num_gpus"),
    ({"num_gpus": 1.5}, "ray_actor_options.num_gpus"),
    ({"memory": -5}, "ray_actor_options.memory"),
    ({"object_store_memory": "lots"}, "ray_actor_options.object_store_memory"),
    ({"resources": {"TPU": -1}}, "ray_actor_options.resources.TPU"),
    ({"resources": {"GPU": 1}}, "ray_actor_options.resources.GPU"),
    ({"resources": [1]}, "ray_actor_options.resources"),
    ({"accelerator_type": 7}, "ray_actor_options.accelerator_type"),
    ({"max_restarts": 3}, "ray_actor_options.max_restarts"),
])
def test_bad_options_name_their_field(options: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        replica_request(options)


def test_resources_gpu_points_at_num_gpus() -> None:
    with pytest.raises(ValueError, match=r"ray_actor_options\.num_gpus, not in resources"):
        replica_request({"resources": {"GPU": 1}})


def test_whole_gpus_above_one_are_allowed() -> None:
    assert replica_request({"num_gpus": 2})["GPU"] == 2.0


# -- fitting --------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_", "fits"), [
    ({"CPU": 4}, True),
    ({"CPU": 4.5}, False),
    ({"memory": 8 * GiB}, True),
    ({"memory": 8 * GiB + 1}, False),
    ({"TPU": 2}, True),
    ({"TPU": 2.5}, False),
    ({"HPU": 1}, False),  # a custom resource the node does not offer
    ({"GPU": 1}, False),
])
def test_fits_only_when_every_requested_amount_is_free(request_: dict, fits: bool) -> None:
    node = node_view("a", {"CPU": 8, "memory": 16 * GiB, "TPU": 4},
                     [PlacedReplica(OTHER, {"CPU": 4, "memory": 8 * GiB, "TPU": 2})])
    result = place(request_, KEY, [node])
    assert isinstance(result, Placement) is fits


def test_fractions_add_up_exactly() -> None:
    node = node_view("a", {"CPU": 1})
    views = [node]
    results, views = place_many([ReplicaAsk(KEY, {"CPU": 0.1})] * 11, views)
    assert [isinstance(r, Placement) for r in results] == [True] * 10 + [False]
    assert views[0].free("CPU") == 0
    # In floats 0.3 - 0.1 - 0.1 < 0.1, and the third would not fit.
    results, _ = place_many([ReplicaAsk(KEY, {"CPU": 0.1})] * 3, [node_view("b", {"CPU": 0.3})])
    assert all(isinstance(r, Placement) for r in results)


def test_spread_fewest_of_the_deployment_then_most_free_cpu_then_node_id() -> None:
    a = node_view("a", {"CPU": 16}, [PlacedReplica(KEY, {"CPU": 1})])
    b = node_view("b", {"CPU": 4})
    c = node_view("c", {"CPU": 8})
    assert place({"CPU": 1}, KEY, [a, b, c]) == Placement("c")  # a has one already
    d = node_view("d", {"CPU": 8})
    assert place({"CPU": 1}, KEY, [d, c, b]) == Placement("c")  # tie on CPU: node_id
    # Replicas of other deployments do not count for spreading, only for resources.
    busy = node_view("busy", {"CPU": 16}, [PlacedReplica(OTHER, {"CPU": 1})] * 3)
    assert place({"CPU": 1}, KEY, [b, busy]) == Placement("busy")


def test_place_many_spreads_a_deployment_over_nodes() -> None:
    nodes = [node_view(name, {"CPU": 4}) for name in ("a", "b", "c")]
    results, views = place_many([ReplicaAsk(KEY, {"CPU": 1})] * 5, nodes)
    assert [r.node_id for r in results if isinstance(r, Placement)] == ["a", "b", "c", "a", "b"]
    assert [v.replicas.get(KEY) for v in views] == [2, 2, 1]
    assert [v.free("CPU") for v in views] == [2, 2, 3]


def test_the_same_views_give_the_same_answer_in_any_order() -> None:
    nodes = [node_view(name, {"CPU": 2}) for name in ("n3", "n1", "n2")]
    assert place({"CPU": 1}, KEY, nodes) == place({"CPU": 1}, KEY, nodes[::-1]) \
        == Placement("n1")


def test_max_replicas_per_node_caps_each_node() -> None:
    nodes = [node_view(name, {"CPU": 8}) for name in ("a", "b")]
    results, views = place_many([ReplicaAsk(KEY, {"CPU": 1}, max_replicas_per_node=2)] * 5,
                                nodes)
    assert [isinstance(r, Placement) for r in results] == [True] * 4 + [False]
    assert [v.replicas[KEY] for v in views] == [2, 2]
    # The cap is per deployment: another deployment still fits.
    assert place({"CPU": 1}, OTHER, views, max_replicas_per_node=2) == Placement("a")


# -- GPUs -----------------------------------------------------------------------------------

def test_whole_gpus_get_distinct_free_indices() -> None:
    node = node_view("a", {"CPU": 8, "GPU": 4})
    results, views = place_many([ReplicaAsk(KEY, {"CPU": 1, "GPU": 2}),
                                 ReplicaAsk(KEY, {"CPU": 1, "GPU": 1}),
                                 ReplicaAsk(KEY, {"CPU": 1, "GPU": 1}),
                                 ReplicaAsk(KEY, {"CPU": 1, "GPU": 1})], [node])
    assert results[:3] == [Placement("a", (0, 1)), Placement("a", (2,)), Placement("a", (3,))]
    assert isinstance(results[3], NoFit)
    assert views[0].gpu_use == {0: 1, 1: 1, 2: 1, 3: 1}


def test_fractional_gpus_share_the_fullest_index_with_room() -> None:
    node = node_view("a", {"CPU": 8, "GPU": 2})
    asks = [ReplicaAsk(KEY, {"GPU": share}) for share in (0.5, 0.3, 0.25, 0.5)]
    results, views = place_many(asks, [node])
    # 0.5 and 0.3 share GPU 0; 0.25 needs room: GPU 0 has 0.2 left, so GPU 1; the last 0.5
    # goes on GPU 1 (0.25 used, the fullest with room).
    assert [r.gpu_indices for r in results if isinstance(r, Placement)] == [
        (0,), (0,), (1,), (1,)]
    assert views[0].gpu_use == {0: 0.8, 1: 0.75}


def test_a_whole_gpu_needs_an_index_no_fraction_uses() -> None:
    node = node_view("a", {"CPU": 8, "GPU": 2},
                     [PlacedReplica(OTHER, {"GPU": 0.5}, (0,)),
                      PlacedReplica(OTHER, {"GPU": 0.5}, (1,))])
    assert node.free("GPU") == 1
    result = place({"GPU": 1}, KEY, [node])
    assert result == NoFit("replica of app/D requests {GPU: 1}; free: a {GPU: 1} "
                           "(not that many GPUs wholly free); no node fits")
    assert place({"GPU": 0.5}, KEY, [node]) == Placement("a", (0,))


def test_no_single_gpu_with_room_for_a_fraction() -> None:
    node = node_view("a", {"GPU": 2}, [PlacedReplica(OTHER, {"GPU": 0.6}, (0,)),
                                       PlacedReplica(OTHER, {"GPU": 0.6}, (1,))])
    result = place({"GPU": 0.5}, KEY, [node])
    assert isinstance(result, NoFit)
    assert "a {GPU: 0.8} (no single GPU has 0.5 free)" in result.reason


# -- why nothing fits -----------------------------------------------------------------------

def test_no_fit_names_the_request_and_what_each_node_has_free() -> None:
    a = node_view("node-a", {"CPU": 4}, [PlacedReplica(OTHER, {"CPU": 3})])
    b = node_view("node-b", {"CPU": 4})
    result = place({"CPU": 2, "GPU": 1}, KEY, [b, a])
    assert result == NoFit("replica of app/D requests {CPU: 2, GPU: 1}; free: "
                           "node-a {CPU: 1, GPU: 0}, node-b {CPU: 4, GPU: 0}; no node fits")


def test_no_fit_shows_memory_readably() -> None:
    result = place({"CPU": 1, "memory": 6 * GiB}, KEY,
                   [node_view("a", {"CPU": 2, "memory": 4.5 * GiB})])
    assert isinstance(result, NoFit)
    assert result.reason == ("replica of app/D requests {CPU: 1, memory: 6GiB}; free: "
                             "a {CPU: 2, memory: 4.5GiB}; no node fits")


def test_no_fit_says_when_max_replicas_per_node_blocks() -> None:
    a = node_view("a", {"CPU": 4}, [PlacedReplica(KEY, {"CPU": 1})] * 2)
    result = place({"CPU": 1}, KEY, [a], max_replicas_per_node=2)
    assert result == NoFit("replica of app/D requests {CPU: 1}; free: a {CPU: 2} (already "
                           "runs 2 of app/D: max_replicas_per_node=2); no node fits")


def test_no_fit_without_nodes() -> None:
    result = place({"CPU": 1}, KEY, [])
    assert result == NoFit("replica of app/D requests {CPU: 1}; no node is registered: "
                           "start a node agent")


def test_no_fit_lists_a_few_nodes_and_counts_the_rest() -> None:
    nodes = [node_view(f"n{i:02}", {"CPU": 0.5}) for i in range(12)]
    result = place({"CPU": 1}, KEY, nodes)
    assert isinstance(result, NoFit)
    assert "n07 {CPU: 0.5}, and 4 more nodes; no node fits" in result.reason
    assert "n08" not in result.reason
