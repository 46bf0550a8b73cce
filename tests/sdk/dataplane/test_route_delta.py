"""Route table deltas: a delta applied to the old table gives the new one, whatever
changed, and merged deltas equal the deltas applied in turn. Pure; nothing runs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weir.dataplane.route_delta import (
    Positions,
    apply_delta,
    compact_load,
    index_table,
    merge_deltas,
    replica_order,
    table_delta,
    targets_delta,
    whole_table,
)
from weir.dataplane.route_table import RouteTable
from weir.protos import weir_pb2 as pb


def table(version: int, deployments: dict[tuple[str, str], dict[str, int]],
          max_ongoing: int = 5) -> pb.RouteTable:
    """A table of `deployments`: (app, name) -> replica id -> ongoing."""
    out = pb.RouteTable(version=version, http_options_json="{}")
    out.routes.append(pb.Route(route_prefix="/", app="a", deployment="D"))
    for (app, name), replicas in sorted(deployments.items()):
        out.deployments.append(pb.DeploymentTargets(
            app=app, deployment=name, max_ongoing_requests=max_ongoing,
            replicas=[pb.ReplicaTarget(replica_id=r, address=f"h:{r}", ongoing=n)
                      for r, n in sorted(replicas.items())]))
    return out


def deployments_of(t: pb.RouteTable) -> dict[tuple[str, str], pb.DeploymentTargets]:
    return RouteTable.from_proto(t).deployments


def delta(old: pb.RouteTable, new: pb.RouteTable) -> pb.RouteTable:
    return table_delta(old.version, index_table(old), new, index_table(new))


def test_a_changed_load_sends_only_that_replica() -> None:
    old = table(1, {("a", "D"): {f"r{i}": 0 for i in range(100)}})
    new = table(2, {("a", "D"): {**{f"r{i}": 0 for i in range(100)}, "r7": 3}})
    d = delta(old, new)
    assert d.delta_from == 1 and d.version == 2
    assert [t.replica_id for t in d.deployments[0].replicas] == ["r7"]
    assert list(d.routes) == list(new.routes)
    assert apply_delta(deployments_of(old), d) == deployments_of(new)


def test_an_unchanged_deployment_is_left_out() -> None:
    old = table(1, {("a", "D"): {"r1": 0}, ("b", "E"): {"r2": 0}})
    new = table(2, {("a", "D"): {"r1": 1}, ("b", "E"): {"r2": 0}})
    assert [(x.app, x.deployment) for x in delta(old, new).deployments] == [("a", "D")]


def test_a_header_change_travels_without_replicas() -> None:
    old = table(1, {("a", "D"): {"r1": 0}})
    new = table(2, {("a", "D"): {"r1": 0}}, max_ongoing=9)
    d = delta(old, new)
    assert d.deployments[0].max_ongoing_requests == 9 and not d.deployments[0].replicas
    assert apply_delta(deployments_of(old), d) == deployments_of(new)


Deployments = dict[tuple[str, str], dict[str, int]]
deployment_sets = st.dictionaries(
    st.sampled_from([("a", "D"), ("a", "E"), ("b", "D")]),
    st.dictionaries(st.sampled_from([f"r{i}" for i in range(6)]), st.integers(0, 3)),
    max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(deployment_sets, min_size=2, max_size=6))
def test_deltas_and_merged_deltas_rebuild_every_table(history: list[Deployments]) -> None:
    tables = [table(v + 1, d) for v, d in enumerate(history)]
    deltas = [delta(a, b) for a, b in itertools.pairwise(tables)]
    current = deployments_of(tables[0])
    # And again keeping the replicas' positions from one delta to the next, as a
    # subscriber does: each delta at least twice, so that the kept positions are used.
    kept, positions = dict(current), Positions()
    for d, want in zip(deltas, tables[1:], strict=True):
        current = apply_delta(current, d)
        assert current == deployments_of(want)
        for _ in range(2):
            kept = apply_delta(kept, d, positions)
            assert kept == deployments_of(want)
            for key, (of, at) in positions.items():
                assert of is kept[key]
                assert at is None or at == {t.replica_id: i
                                            for i, t in enumerate(of.replicas)}
    merged = merge_deltas(deltas)
    assert merged.delta_from == tables[0].version and merged.version == tables[-1].version
    assert apply_delta(deployments_of(tables[0]), merged) == deployments_of(tables[-1])


def test_applying_leaves_the_old_table_as_it_was() -> None:
    old = table(1, {("a", "D"): {"r1": 0, "r2": 0}})
    before = deployments_of(old)
    kept = {k: pb.DeploymentTargets.FromString(v.SerializeToString()) for k, v in before.items()}
    apply_delta(before, delta(old, table(2, {("a", "D"): {"r1": 2}})))
    assert before == kept


@settings(max_examples=100, deadline=None)
@given(st.lists(deployment_sets, min_size=2, max_size=6))
def test_the_targets_that_changed_give_the_same_table_as_the_whole(
        history: list[Deployments]) -> None:
    # The leader gives only the replicas that reported: given each replica of a deployment
    # both tables have, changed or not, and the ones that left as None, the delta rebuilds
    # the new table, and the index it returns makes the new table whole.
    tables = [table(v + 1, d) for v, d in enumerate(history)]
    for old, new in itertools.pairwise(tables):
        old_index, new_index = index_table(old), index_table(new)
        if set(old_index) != set(new_index):
            continue  # a deployment came or went: the leader publishes the whole table
        targets = {key: {**{rid: None for rid in old_index[key].targets},
                         **new_index[key].targets} for key in new_index}
        d, index = targets_delta(old.version, old_index, new, targets)
        assert (d.delta_from, d.version) == (old.version, old.version + 1)
        assert apply_delta(deployments_of(old), d) == deployments_of(new)
        assert whole_table(new, index) == new
        unchanged = [k for k in new_index if old_index[k] == new_index[k]]
        assert not {(x.app, x.deployment) for x in d.deployments} & set(unchanged)


def test_a_delta_changes_only_what_it_names() -> None:
    # A deployment the delta leaves out is the same object after (a caller may skip it),
    # and one it names keeps its other replicas in id order, the new one in its place.
    old = table(1, {("a", "D"): {f"r{i}": 0 for i in range(0, 200, 2)},
                    ("b", "E"): {"r1": 0}})
    new = table(2, {("a", "D"): {**{f"r{i}": 0 for i in range(0, 200, 2) if i != 40},
                                 "r5": 1, "r8": 2},
                    ("b", "E"): {"r1": 0}})
    before = deployments_of(old)
    after = apply_delta(before, delta(old, new))
    assert after[("b", "E")] is before[("b", "E")]
    assert after == deployments_of(new)


def compact(d: pb.RouteTable, old: pb.RouteTable, new: pb.RouteTable) -> pb.RouteTable:
    """`d` (from `old` to `new`) with its loads compact, as the leader sends it."""
    new_index = index_table(new)
    return compact_load(d, index_table(old), lambda key: replica_order(new_index[key].targets))


def test_a_change_of_load_alone_travels_as_a_position() -> None:
    old = table(1, {("a", "D"): {f"r{i}": 0 for i in range(10)}})
    new = table(2, {("a", "D"): {**{f"r{i}": 0 for i in range(10) if i != 2},
                                 "r7": 3, "r4": 1, "r10": 2}})
    new.deployments[0].replicas[0].address = "elsewhere:1"  # r0 moved: sent whole
    d = compact(delta(old, new), old, new)
    (changed,) = d.deployments
    assert sorted(t.replica_id for t in changed.replicas) == ["r0", "r10"]
    assert list(changed.removed_replica_ids) == ["r2"]
    # Positions in the replicas after the delta, by id: r0 r1 r10 r3 r4 r5 r6 r7 ...
    assert list(changed.load_positions) == [4, 7]
    assert list(changed.load_ongoing) == [1, 3]
    assert apply_delta(deployments_of(old), d) == deployments_of(new)


def test_compact_loads_that_do_not_fit_the_table_are_refused() -> None:
    old = table(1, {("a", "D"): {"r1": 0, "r2": 0}})
    bad = pb.RouteTable(version=2, delta_from=1)
    bad.deployments.append(pb.DeploymentTargets(app="a", deployment="D",
                                                load_positions=[2], load_ongoing=[1]))
    with pytest.raises(ValueError, match="load_positions"):
        apply_delta(deployments_of(old), bad)
    bad.deployments[0].load_positions[:] = [0, 1]
    with pytest.raises(ValueError, match="load_ongoing"):
        apply_delta(deployments_of(old), bad)


#: Each replica's (ongoing, port): a change of port is a change besides load.
Targets = dict[tuple[str, str], dict[str, tuple[int, int]]]
target_sets = st.dictionaries(
    st.sampled_from([("a", "D"), ("a", "E"), ("b", "D")]),
    st.dictionaries(st.sampled_from([f"r{i}" for i in range(8)]),
                    st.tuples(st.integers(0, 3), st.integers(1, 2))),
    max_size=3)


def table_of_targets(version: int, deployments: Targets) -> pb.RouteTable:
    out = table(version, {key: {r: n for r, (n, _) in replicas.items()}
                          for key, replicas in deployments.items()})
    for d in out.deployments:
        for t in d.replicas:
            t.address = f"h:{deployments[(d.app, d.deployment)][t.replica_id][1]}"
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(target_sets, min_size=2, max_size=6))
def test_compact_deltas_give_the_same_tables_as_whole_ones(history: list[Targets]) -> None:
    # A subscriber applies them keeping its positions, as it does, each delta twice so
    # that the kept positions are used; no change of load alone travels whole.
    tables = [table_of_targets(v + 1, d) for v, d in enumerate(history)]
    whole_view = deployments_of(tables[0])
    compact_view, positions = dict(whole_view), Positions()
    for old, new in itertools.pairwise(tables):
        d = delta(old, new)
        c = compact(d, old, new)
        whole_view = apply_delta(whole_view, d)
        for _ in range(2):
            compact_view = apply_delta(compact_view, c, positions)
            assert compact_view == deployments_of(new)
        assert whole_view == deployments_of(new)
        before = index_table(old)
        for x in c.deployments:
            entry = before.get((x.app, x.deployment))
            for t in x.replicas:
                was = entry.targets.get(t.replica_id) if entry is not None else None
                assert was is None or was.address != t.address


@settings(max_examples=200, deadline=None)
@given(st.lists(target_sets, min_size=2, max_size=6))
def test_loads_set_in_place_give_the_same_tables_and_leave_other_changes_new(
        history: list[Targets]) -> None:
    # A subscriber's way: compact deltas, loads set in the objects it holds. A deployment
    # changed otherwise is a new object, and the one before keeps what it held.
    tables = [table_of_targets(v + 1, d) for v, d in enumerate(history)]
    view, positions = deployments_of(tables[0]), Positions()
    for old, new in itertools.pairwise(tables):
        c = compact(delta(old, new), old, new)
        held = {key: d.SerializeToString() for key, d in view.items()}
        after = apply_delta(view, c, positions, loads_in_place=True)
        assert after == deployments_of(new)
        for x in c.deployments:
            key = (x.app, x.deployment)
            before = view.get(key)
            in_place = before is not None and not x.replicas and not x.removed_replica_ids \
                and x.max_ongoing_requests == before.max_ongoing_requests
            assert (after[key] is before) == in_place
            if before is not None and not in_place:
                assert before.SerializeToString() == held[key]
        view = after


def test_a_changed_header_is_not_set_in_place() -> None:
    old = table(1, {("a", "D"): {"r1": 0, "r2": 0}})
    new = table(2, {("a", "D"): {"r1": 0, "r2": 4}}, max_ongoing=9)
    view = deployments_of(old)
    after = apply_delta(view, compact(delta(old, new), old, new), loads_in_place=True)
    assert after == deployments_of(new) and after[("a", "D")] is not view[("a", "D")]
    assert view == deployments_of(old)


def test_positions_are_made_only_for_enough_whole_targets() -> None:
    # After a change of the replicas, compact loads and a few whole targets need no map of
    # positions (it costs a lookup per replica); many whole targets make one.
    ids = {f"r{i:03d}": 0 for i in range(320)}
    tables = [table(1, {("a", "D"): ids}),
              table(2, {("a", "D"): {**ids, "r999": 0}}),  # a replica added
              table(3, {("a", "D"): {**ids, "r999": 0, "r005": 2}}),  # a load alone
              table(4, {("a", "D"): {**ids, "r999": 1, "r005": 2}})]
    tables[3].deployments[0].replicas[-1].address = "moved:1"  # r999: a whole target
    tables.append(table(5, {("a", "D"): {**ids, "r999": 1, "r005": 2}}))
    tables[4].deployments[0].replicas[-1].address = "moved:1"
    for target in tables[4].deployments[0].replicas[:40]:  # 40 replicas moved: whole
        target.address = "moved:2"
    view, positions = deployments_of(tables[0]), Positions()
    made = []
    for old, new in itertools.pairwise(tables):
        view = apply_delta(view, compact(delta(old, new), old, new), positions)
        assert view == deployments_of(new)
        made.append(positions[("a", "D")][1] is not None)
    assert made == [False, False, False, True]
