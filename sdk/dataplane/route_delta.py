"""Route table deltas: what changed between two versions of the table, and how a
subscriber applies it.

Design. At thousands of replicas the whole table is hundreds of kilobytes, and every load
report changes it: pushing it whole to every subscriber on every change costs the leader a
serialization per subscriber and each subscriber a parse of everything, for a handful of
changed replicas. So the leader sends a subscriber the whole table once, then deltas
(`RouteTable.delta_from` set): the routes and http options whole (they are small), and of
the deployments only those that changed, each with its added or changed `ReplicaTarget`s
whole and the ids of the replicas that left. Targets travel as whole messages, so a field
added to `ReplicaTarget` or `DeploymentTargets` rides along with no change here; but
most versions change only replicas' load, and a subscriber that said so gets those as
positions and counts (`compact_load`), two packed arrays in place of a message each.

The leader rebuilds only what changed, so it compares only that: between its passes, the
targets of the replicas that reported (`targets_delta`). It keeps the whole table as its
index, and `whole_table` makes the message again for a subscriber that needs it whole.

A subscriber that fell behind gets the deltas it missed merged into one (`merge_deltas`);
one that cannot apply a delta (its version is not the delta's base) resubscribes and gets
the whole table again. Pure functions over the wire messages; no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from weir.protos import weir_pb2 as pb

Key = tuple[str, str]


@dataclass(frozen=True)
class IndexedDeployment:
    """A deployment of a table, with its targets by replica id."""

    header: pb.DeploymentTargets
    targets: dict[str, pb.ReplicaTarget]


def index_table(table: pb.RouteTable) -> dict[Key, IndexedDeployment]:
    """Each deployment of `table` by (app, deployment), its targets by replica id."""
    return {(d.app, d.deployment): index_deployment(d) for d in table.deployments}


def index_deployment(d: pb.DeploymentTargets) -> IndexedDeployment:
    """One deployment of a table, its targets by replica id."""
    return IndexedDeployment(deployment_header(d), {t.replica_id: t for t in d.replicas})


def whole_table(shell: pb.RouteTable, index: Mapping[Key, IndexedDeployment]
                ) -> pb.RouteTable:
    """The whole table of `index`, with the version, routes and http options of `shell`
    (its deployments are ignored), deployments sorted by key and replicas by id."""
    table = _with_routes(shell)
    for key in sorted(index):
        entry = index[key]
        d = table.deployments.add()
        d.CopyFrom(entry.header)
        d.replicas.extend(entry.targets[rid] for rid in sorted(entry.targets))
    return table


def deployment_header(d: pb.DeploymentTargets) -> pb.DeploymentTargets:
    """`d` without its replicas (and without the delta-only removals and loads): every
    other field, whichever fields the message has."""
    header = pb.DeploymentTargets()
    for descriptor, value in d.ListFields():
        if descriptor.name in _REPLICA_FIELDS:
            continue
        if descriptor.is_repeated:
            getattr(header, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(header, descriptor.name).CopyFrom(value)
        else:
            setattr(header, descriptor.name, value)
    return header


def _with_routes(table: pb.RouteTable) -> pb.RouteTable:
    """A delta shell of `table`: its version, routes and http options."""
    delta = pb.RouteTable(version=table.version, http_options_json=table.http_options_json)
    delta.routes.extend(table.routes)
    return delta


def table_delta(old_version: int, old: Mapping[Key, IndexedDeployment],
                new: pb.RouteTable, new_index: Mapping[Key, IndexedDeployment]
                ) -> pb.RouteTable:
    """The delta that turns the table of `old_version` (indexed as `old`) into `new`."""
    delta = _with_routes(new)
    delta.delta_from = old_version
    for key, now in new_index.items():
        before = old.get(key)
        if before is None:
            changed = pb.DeploymentTargets()
            changed.CopyFrom(now.header)
            changed.replicas.extend(now.targets.values())
            delta.deployments.append(changed)
            continue
        upserts = [t for rid, t in now.targets.items() if before.targets.get(rid) != t]
        removed = [rid for rid in before.targets if rid not in now.targets]
        if upserts or removed or before.header != now.header:
            changed = pb.DeploymentTargets()
            changed.CopyFrom(now.header)
            changed.replicas.extend(upserts)
            changed.removed_replica_ids.extend(removed)
            delta.deployments.append(changed)
    for app, name in old:
        if (app, name) not in new_index:
            delta.removed_deployments.append(pb.DeploymentTargets(app=app, deployment=name))
    return delta


def targets_delta(old_version: int, old: Mapping[Key, IndexedDeployment],
                  shell: pb.RouteTable,
                  targets: Mapping[Key, Mapping[str, pb.ReplicaTarget | None]]
                  ) -> tuple[pb.RouteTable, dict[Key, IndexedDeployment]]:
    """The delta from the table of `old_version` (indexed as `old`) that changes only the
    targets given, and the new index: `targets` maps deployments of `old` to the new
    target of each replica given (None: it leaves); `shell` gives the routes and http
    options. Costs what is given, not the whole table. Raises KeyError for a deployment
    `old` lacks (a new deployment needs its header: publish the whole table)."""
    delta = _with_routes(shell)
    delta.version, delta.delta_from = old_version + 1, old_version
    index = dict(old)
    for key in sorted(targets):
        entry = old[key]
        upserts, removed = [], []
        for rid, target in targets[key].items():
            before = entry.targets.get(rid)
            if target is None:
                if before is not None:
                    removed.append(rid)
            elif before != target:
                upserts.append(target)
        if not upserts and not removed:
            continue
        kept = dict(entry.targets)
        for rid in removed:
            del kept[rid]
        kept.update((t.replica_id, t) for t in upserts)
        index[key] = IndexedDeployment(entry.header, kept)
        changed = delta.deployments.add()
        changed.CopyFrom(entry.header)
        changed.replicas.extend(upserts)
        changed.removed_replica_ids.extend(sorted(removed))
    return delta, index


@dataclass
class _Pending:
    header: pb.DeploymentTargets
    upserts: dict[str, pb.ReplicaTarget] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


def merge_deltas(deltas: Sequence[pb.RouteTable]) -> pb.RouteTable:
    """One delta equal to applying `deltas` (consecutive, oldest first) in turn."""
    pending: dict[Key, _Pending] = {}
    # A deployment removed in the window stays listed as removed even if it came back:
    # the subscriber drops what it had, then applies what came back onto nothing.
    removed_deployments: set[Key] = set()
    for delta in deltas:
        for gone in delta.removed_deployments:
            key = (gone.app, gone.deployment)
            pending.pop(key, None)
            removed_deployments.add(key)
        for d in delta.deployments:
            key = (d.app, d.deployment)
            entry = pending.setdefault(key, _Pending(d))
            entry.header = d
            for rid in d.removed_replica_ids:
                entry.upserts.pop(rid, None)
                entry.removed.add(rid)
            for t in d.replicas:
                entry.upserts[t.replica_id] = t
                entry.removed.discard(t.replica_id)
    merged = _with_routes(deltas[-1])
    merged.delta_from = deltas[0].delta_from
    for key in sorted(removed_deployments):
        merged.removed_deployments.append(pb.DeploymentTargets(app=key[0], deployment=key[1]))
    for entry in pending.values():
        d = deployment_header(entry.header)
        d.replicas.extend(entry.upserts.values())
        d.removed_replica_ids.extend(sorted(entry.removed))
        merged.deployments.append(d)
    return merged


def replica_order(targets: Iterable[str]) -> dict[str, int]:
    """Each replica's position in its deployment's `replicas` as the whole table lists
    them (by id), by replica id: `targets` gives the ids (a deployment's targets by id)."""
    return {rid: i for i, rid in enumerate(sorted(targets))}


def compact_load(delta: pb.RouteTable, old: Mapping[Key, IndexedDeployment],
                 order: Callable[[Key], Mapping[str, int]]) -> pb.RouteTable:
    """`delta` (from the table indexed as `old`) with each change of load alone (a target
    that differs from its one in `old` only by `ongoing`) sent as a position and a count
    (`DeploymentTargets.load_positions`, `load_ongoing`) instead of a whole target.

    `order(key)` gives each replica's position in the deployment after `delta`
    (`replica_order`), asked only for a deployment with such a change. Most versions change
    only load: a subscriber then parses two packed arrays and sets integers, where whole
    targets cost a message each to parse and copy (for every one of a hundred subscribers,
    four times a second)."""
    compact = _with_routes(delta)
    compact.delta_from = delta.delta_from
    compact.removed_deployments.extend(delta.removed_deployments)
    for d in delta.deployments:
        out = compact.deployments.add()
        out.CopyFrom(deployment_header(d))
        out.removed_replica_ids.extend(d.removed_replica_ids)
        entry = old.get((d.app, d.deployment))
        loads: list[tuple[str, int]] = []
        for target in d.replicas:
            before = entry.targets.get(target.replica_id) if entry is not None else None
            if before is not None and _only_load_differs(before, target):
                loads.append((target.replica_id, target.ongoing))
            else:
                out.replicas.append(target)
        if loads:
            at = order((d.app, d.deployment))
            for position, ongoing in sorted((at[rid], ongoing) for rid, ongoing in loads):
                out.load_positions.append(position)
                out.load_ongoing.append(ongoing)
    return compact


def _only_load_differs(before: pb.ReplicaTarget, after: pb.ReplicaTarget) -> bool:
    if before.ongoing == after.ongoing:
        return False
    # Compared whole but for `ongoing`: a field added to the target later counts too.
    probe = pb.ReplicaTarget()
    probe.CopyFrom(after)
    probe.ongoing = before.ongoing
    return probe == before


#: A map of positions costs a lookup per replica of the deployment, bisection a dozen or so
#: per target: a delta with no more targets than one per this many replicas bisects.
_BISECTED_PER_REPLICA = 32


#: Where each replica of a deployment sits in its `replicas`, by replica id, for the
#: deployment object it was taken from (`apply_delta` keeps them across tables).
Positions = dict[Key, tuple[pb.DeploymentTargets, dict[str, int] | None]]


def apply_delta(deployments: Mapping[Key, pb.DeploymentTargets], delta: pb.RouteTable,
                positions: Positions | None = None, *,
                loads_in_place: bool = False) -> dict[Key, pb.DeploymentTargets]:
    """The deployments after `delta` (a new mapping; `deployments` is left as it was,
    unless `loads_in_place`). Each changed deployment lists its replicas by id, as the
    whole table does (and as `deployments` must: a new replica is placed by bisection).

    With `loads_in_place`, a deployment whose change is of compact loads alone
    (`loads_only`: most versions) has those counts set in the object `deployments` holds,
    which the result holds too: a copy of the deployment per delta cost a subscriber 64 us
    per 1,000 replicas, for a few counts, and at 10,000 replicas most of a simulated
    proxy's CPU. For a caller that keeps one table and drops the one before (a
    subscriber); a change of anything else still makes a new deployment object.

    Costs what the delta changes, not what the deployment holds: a changed deployment is
    copied whole in one call (`CopyFrom`, in C) and its changed replicas are replaced in
    place. (It used to rebuild the deployment's list of replicas in Python, sorted anew:
    0.5 to 0.8 ms per delta at 1,000 replicas, for one replica changed; every one of a
    hundred subscribers paid it for every delta.) `positions`, if given, is updated in
    place for the deployments returned: a delta that only changes replicas already there
    (most of them: load) finds them by id there, and the next delta reuses them."""
    out = dict(deployments)
    for gone in delta.removed_deployments:
        out.pop((gone.app, gone.deployment), None)
    for d in delta.deployments:
        key = (d.app, d.deployment)
        before = out.get(key)
        if loads_in_place and before is not None and loads_only(before, d):
            _set_loads(before, d)  # the same object: `positions` of it still hold
            continue
        merged = pb.DeploymentTargets()
        if before is not None:
            merged.CopyFrom(before)
            for name in _HEADER_FIELDS:
                merged.ClearField(name)
        merged.MergeFrom(deployment_header(d))
        out[key] = merged
        kept = positions.get(key) if positions is not None else None
        at = None
        if kept is not None and kept[0] is before and not d.removed_replica_ids:
            at = kept[1]
            # Made when first needed, after a change of the replicas, by enough whole
            # targets to pay for it (a few are placed by bisection; a compact delta names
            # positions). Made for every first delta after a change, it was 29 % of a
            # subscriber's CPU in the simulation at 2,000, whose probes change the
            # replicas several times a second.
            if at is None and len(d.replicas) > len(merged.replicas) // _BISECTED_PER_REPLICA:
                at = _positions_of(merged)
        if d.replicas and at is not None and all(t.replica_id in at for t in d.replicas):
            replicas = merged.replicas
            for target in d.replicas:
                replicas[at[target.replica_id]].CopyFrom(target)
        elif d.replicas or d.removed_replica_ids:
            _place(merged.replicas, d)
            at = None
        if d.load_positions or d.load_ongoing:
            _set_loads(merged, d)
        if positions is not None:
            positions[key] = (merged, at)
    if positions is not None:
        for key in [k for k in positions if k not in out]:
            del positions[key]
    return out


@dataclass(frozen=True)
class TableChange:
    """How a table made by a delta differs from the one it was applied to (`before`), for
    a caller that keeps state per deployment (a proxy's routers, which took 9 ms to
    rebuild at 10,000 replicas): a deployment whose change was of load alone is in
    `loads`; any other one the delta names changed otherwise (replicas, a replica's
    address or models, options) and is taken whole; the rest are `before`'s objects."""

    #: The deployments the delta was applied to (a caller checks it holds these).
    before: Mapping[Key, pb.DeploymentTargets]
    #: Deployment -> (position, new `ongoing`) of each replica whose load changed, for the
    #: deployments whose load alone changed. Positions, not ids: a compact delta names
    #: positions, and an id per position cost 0.3 ms per version at 10,000 replicas.
    loads: Mapping[Key, Sequence[tuple[int, int]]]


def table_change(before: Mapping[Key, pb.DeploymentTargets],
                 after: Mapping[Key, pb.DeploymentTargets], delta: pb.RouteTable,
                 positions: Positions | None = None) -> TableChange:
    """What `delta` changed, `after` being `apply_delta(before, delta, positions)`: the
    deployments whose change was of load alone and the replicas' new counts. `positions`
    (as `apply_delta` left them) spares a bisection per whole target."""
    loads: dict[Key, Sequence[tuple[int, int]]] = {}
    for d in delta.deployments:
        key = (d.app, d.deployment)
        changed = _load_alone(before.get(key), after[key], d,
                              positions.get(key) if positions is not None else None)
        if changed is not None:
            loads[key] = changed
    return TableChange(before, loads)


def _load_alone(before: pb.DeploymentTargets | None, after: pb.DeploymentTargets,
                d: pb.DeploymentTargets,
                kept: tuple[pb.DeploymentTargets, dict[str, int] | None] | None,
                ) -> list[tuple[int, int]] | None:
    """The positions and new counts of the replicas `d` changed, if it changed only their
    load; else None."""
    if (before is None or d.removed_replica_ids
            or len(after.replicas) != len(before.replicas)
            or not _same_header(d, before)):
        return None
    # No replica left and as many as before: the same ids, at the same positions.
    at = kept[1] if kept is not None and kept[0] is after else None
    old, new = before.replicas, after.replicas
    loads = list(zip(d.load_positions, d.load_ongoing, strict=True))
    for target in d.replicas:
        rid = target.replica_id
        i = at[rid] if at is not None and rid in at else bisect.bisect_left(
            new, rid, key=_replica_id)
        prior = old[i]
        if prior.replica_id != rid or not (prior == target
                                           or _only_load_differs(prior, target)):
            return None
        loads.append((i, target.ongoing))
    return loads


def loads_only(before: pb.DeploymentTargets, d: pb.DeploymentTargets) -> bool:
    """Whether `d` (a deployment of a delta) changes `before` only by compact loads: no
    whole target, no removal, the same header."""
    return not d.replicas and not d.removed_replica_ids and _same_header(d, before)


def _same_header(a: pb.DeploymentTargets, b: pb.DeploymentTargets) -> bool:
    """Whether `a` and `b` agree in every field but the replicas (`_HEADER_FIELDS`)."""
    return all(getattr(a, name) == getattr(b, name) for name in _HEADER_FIELDS)


def _set_loads(merged: pb.DeploymentTargets, d: pb.DeploymentTargets) -> None:
    """Set the `ongoing` of the replicas `d`'s compact loads name, by position in `merged`."""
    count = len(merged.replicas)
    if len(d.load_positions) != len(d.load_ongoing) or (
            d.load_positions and d.load_positions[-1] >= count):
        raise ValueError(
            f"route delta for {d.app}/{d.deployment}: {len(d.load_positions)} "
            f"load_positions (last {d.load_positions[-1] if d.load_positions else None}) "
            f"and {len(d.load_ongoing)} load_ongoing for {count} replicas; they must pair "
            "up, ascending, within the replicas: subscribe again for the whole table")
    replicas = merged.replicas
    for position, ongoing in zip(d.load_positions, d.load_ongoing, strict=True):
        replicas[position].ongoing = ongoing


def _positions_of(d: pb.DeploymentTargets) -> dict[str, int]:
    return {t.replica_id: i for i, t in enumerate(d.replicas)}


def _place(replicas: Any, d: pb.DeploymentTargets) -> None:
    """Remove `d`'s removed replicas from `replicas` and put its targets in, by bisection
    (`replicas` is sorted by id, and stays so)."""
    for rid in d.removed_replica_ids:
        i = bisect.bisect_left(replicas, rid, key=_replica_id)
        if i < len(replicas) and replicas[i].replica_id == rid:
            del replicas[i]
    for target in d.replicas:
        i = bisect.bisect_left(replicas, target.replica_id, key=_replica_id)
        if i < len(replicas) and replicas[i].replica_id == target.replica_id:
            replicas[i].CopyFrom(target)
        else:
            replicas.insert(i, target)


#: The fields of a deployment that say which replicas it has: the replicas, and in a delta
#: those that left and the loads that changed.
_REPLICA_FIELDS = ("replicas", "removed_replica_ids", "load_positions", "load_ongoing")
#: The fields of a deployment a delta carries whole: all the others.
_HEADER_FIELDS = tuple(f.name for f in pb.DeploymentTargets.DESCRIPTOR.fields
                       if f.name not in _REPLICA_FIELDS)


def _replica_id(target: pb.ReplicaTarget) -> str:
    return target.replica_id
