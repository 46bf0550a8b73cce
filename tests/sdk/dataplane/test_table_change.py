"""A change of load alone reaches a proxy's routers as the changed replicas' counts: the
table says which deployments changed only in load (`TableChange`), and routers updated
that way equal routers rebuilt from each whole table. Pure; nothing runs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sdk.dataplane.test_route_delta import compact, delta, table, table_of_targets
from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import LeaderLocator, RouteTable
from weir.dataplane.router import DeploymentRouter
from weir.protos import weir_pb2 as pb

KEY = ("a", "D")
IDS = {f"r{i}": 0 for i in range(10)}


def change_of(old: pb.RouteTable, new: pb.RouteTable, *, compact_loads: bool
              ) -> dict[tuple[str, str], list[tuple[int, int]]]:
    d = delta(old, new)
    if compact_loads:
        d = compact(d, old, new)
    after = RouteTable.from_proto(old).with_delta(d)
    assert after.change is not None
    return {key: list(loads) for key, loads in after.change.loads.items()}


@pytest.mark.parametrize("compact_loads", [False, True])
def test_a_change_of_load_alone_names_the_positions_and_counts(compact_loads: bool) -> None:
    old = table(1, {KEY: IDS, ("a", "E"): {"r1": 0}})
    new = table(2, {KEY: {**IDS, "r3": 2, "r7": 1}, ("a", "E"): {"r1": 0}})
    assert change_of(old, new, compact_loads=compact_loads) == {KEY: [(3, 2), (7, 1)]}


@pytest.mark.parametrize("compact_loads", [False, True])
@pytest.mark.parametrize("what", ["added", "removed", "moved", "options", "new deployment"])
def test_any_other_change_is_not_a_change_of_load(compact_loads: bool, what: str) -> None:
    replicas = {**IDS, "r3": 2}
    old = table(1, {KEY: IDS})
    if what == "added":
        new = table(2, {KEY: {**replicas, "r99": 0}})
    elif what == "removed":
        new = table(2, {KEY: {r: n for r, n in replicas.items() if r != "r5"}})
    elif what == "moved":
        new = table(2, {KEY: replicas})
        new.deployments[0].replicas[4].address = "elsewhere:1"
    elif what == "options":
        new = table(2, {KEY: replicas}, max_ongoing=7)
    else:
        new = table(2, {KEY: IDS, ("b", "F"): {"r1": 1}})
    assert change_of(old, new, compact_loads=compact_loads) == {}


def test_a_whole_table_has_no_change() -> None:
    assert RouteTable.from_proto(table(1, {KEY: IDS})).change is None


def test_a_router_sets_the_counts_by_position() -> None:
    router = DeploymentRouter("a", "D")
    router.update(5, -1, [("r1", "h:1", 0), ("r2", "h:2", 0), ("r3", "h:3", 4)])
    router.set_reported([(0, 3), (2, 1)])
    assert [(s.replica_id, s.reported) for s in router._slots.values()] == [
        ("r1", 3), ("r2", 0), ("r3", 1)]
    with pytest.raises(IndexError):
        router.set_reported([(3, 1)])


def routers_of(plane: DataPlane) -> dict[tuple[str, str], Any]:
    """What a router took from the table, for each deployment in it (a deployment that
    left keeps a router marked removed)."""
    return {key: (r.max_ongoing, r.max_queued,
                  [(s.replica_id, s.address, s.reported, s.multiplexed, s.models)
                   for s in r._slots.values()],
                  [s.replica_id for s in r._ordered])
            for key, r in plane.routers.items() if r.known and not r.removed}


#: Each replica's (ongoing, port): a change of port is a change besides load.
replica_sets = st.dictionaries(st.sampled_from([f"r{i}" for i in range(8)]),
                               st.tuples(st.integers(0, 3), st.integers(1, 2)))
history_steps = st.tuples(
    st.dictionaries(st.sampled_from([KEY, ("a", "E"), ("b", "D")]), replica_sets,
                    max_size=3),
    st.integers(4, 5),  # max_ongoing_requests: a change of options
    st.booleans())  # loads compact or whole


@settings(max_examples=200, deadline=None)
@given(st.lists(history_steps, min_size=2, max_size=8))
def test_routers_updated_by_load_equal_routers_rebuilt_from_each_table(
        history: list[Any]) -> None:
    # Mostly loads, as in a cluster: each step's table is the one before with some loads
    # changed, unless it changes the replicas or the options.
    tables = []
    for version, (targets, max_ongoing, _) in enumerate(history, start=1):
        t = table_of_targets(version, targets)
        for d in t.deployments:
            d.max_ongoing_requests = max_ongoing
        tables.append(t)
    incremental = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "test")
    view = RouteTable.from_proto(tables[0])
    incremental._on_table(view)
    for (old, new), (_, _, compact_loads) in zip(itertools.pairwise(tables), history[1:],
                                                 strict=True):
        d = delta(old, new)
        view = view.with_delta(compact(d, old, new) if compact_loads else d)
        incremental._on_table(view)
        rebuilt = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "test")
        rebuilt._on_table(RouteTable.from_proto(new))
        assert routers_of(incremental) == routers_of(rebuilt)
        assert {key for key, r in incremental.routers.items() if r.removed} == {
            key for key in incremental.routers if key not in view.deployments}


def test_a_load_change_updates_only_the_changed_replicas() -> None:
    plane = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "test")
    old = table(1, {KEY: IDS})
    new = table(2, {KEY: {**IDS, "r3": 2}})
    view = RouteTable.from_proto(old)
    plane._on_table(view)
    router = plane.routers[KEY]
    slots = router._slots
    calls: list[Any] = []
    router.update = lambda *args, **kwargs: calls.append(args)  # type: ignore[method-assign]
    plane._on_table(view.with_delta(compact(delta(old, new), old, new)))
    assert calls == [] and router._slots is slots  # no rebuild
    assert slots["r3"].reported == 2
