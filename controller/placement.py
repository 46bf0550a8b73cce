"""Placement: which node runs a new replica, decided from resources alone.

Design. A replica asks for resources the way Ray's actors do (`ray_actor_options`: one CPU
unless told otherwise, GPUs, memory in bytes, custom resources by name); a node offers
resources and already runs some replicas. `place` is a pure function of those plain
values, so the leader can call it inside its reconcile pass and a test can call it with
nothing running. A replica goes on a node whose free resources cover its whole request
and that holds fewer than `max_replicas_per_node` replicas of its deployment. Among those
nodes, replicas of one deployment spread (the node with the fewest of them, then the one
with the most free CPU), as Ray Serve spreads by default: losing one host then loses as
few of a deployment's replicas as possible. node_id breaks the last tie, so two leaders
given the same views decide the same.

Amounts are compared in fixed point (1/10000, Ray's precision for fractional resources):
in floats, ten replicas of 0.1 CPU would not fit on one CPU.

GPUs are handed out by index (0 .. GPU-1 of what the node offers; its agent maps them to
its devices) for CUDA_VISIBLE_DEVICES:
  - a whole number of GPUs takes that many indices nobody uses at all, lowest first;
  - a fraction of a GPU (Ray allows fractions only up to 1) shares one index with other
    fractions: the fullest index that still has room (best fit, lowest index on a tie),
    so fractions pack together and whole GPUs stay free for whole requests.
A node can therefore have GPU capacity left in total and still not fit a request for one
whole GPU (two indices half used); the NoFit message says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

#: Ray's resource names.
CPU = "CPU"
GPU = "GPU"
MEMORY = "memory"
#: Each replica reserves one CPU unless its ray_actor_options say otherwise (Ray Serve's
#: default).
DEFAULT_REPLICA_CPUS = 1.0
#: `accelerator_type="A100"` asks, as in Ray, for a sliver of the custom resource
#: "accelerator_type:A100" that a node with such devices offers.
ACCELERATOR_PREFIX = "accelerator_type:"
ACCELERATOR_AMOUNT = 0.001
#: The ray_actor_options Ray Serve accepts. runtime_env is prepared elsewhere;
#: object_store_memory is checked and ignored: Weir has no object store.
ALLOWED_OPTIONS = ("accelerator_type", "memory", "num_cpus", "num_gpus",
                   "object_store_memory", "resources", "runtime_env")
#: Fixed-point units per 1 of a resource.
UNITS = 10_000
#: How many nodes a NoFit message lists before summing up the rest.
NODES_LISTED = 8

#: (app, deployment).
DeploymentKey = tuple[str, str]
Resources = Mapping[str, float]


def replica_request(ray_actor_options: Mapping[str, Any] | None) -> dict[str, float]:
    """The resources one replica reserves, from its deployment's ray_actor_options.

    Ray's semantics: `num_cpus` (default 1), `num_gpus` (default 0; a fraction up to 1, or
    a whole number), `memory` in bytes (rounded down), `resources` {name: amount} for custom
    resources, `accelerator_type` as the custom resource "accelerator_type:<type>". Zero
    amounts are left out. Raises ValueError naming the field (`ray_actor_options.num_cpus`)
    and what to write instead.
    """
    options = dict(ray_actor_options or {})
    unknown = sorted(set(options) - set(ALLOWED_OPTIONS))
    if unknown:
        raise ValueError(f"ray_actor_options.{unknown[0]} is not an option of a replica; "
                         f"allowed: {', '.join(ALLOWED_OPTIONS)}")
    cpus = _amount(options.get("num_cpus"), "num_cpus", DEFAULT_REPLICA_CPUS)
    gpus = _amount(options.get("num_gpus"), "num_gpus", 0.0)
    if gpus > 1 and not gpus.is_integer():
        raise ValueError(f"ray_actor_options.num_gpus: {gpus:g} is neither a share of one GPU "
                         "(at most 1) nor a whole number of GPUs; ask for e.g. 0.5 or 2")
    memory = float(math.floor(_amount(options.get("memory"), "memory", 0.0)))
    _amount(options.get("object_store_memory"), "object_store_memory", 0.0)
    request = {CPU: cpus, GPU: gpus, MEMORY: memory}
    custom = options.get("resources")
    if custom is None:
        custom = {}
    if not isinstance(custom, Mapping):
        raise ValueError("ray_actor_options.resources must be a mapping of resource name to "
                         f"amount, e.g. {{\"TPU\": 1}}; got {custom!r}")
    for name, value in custom.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"ray_actor_options.resources: {name!r} is not a resource name")
        if name in (CPU, GPU, MEMORY):
            option = {CPU: "num_cpus", GPU: "num_gpus", MEMORY: "memory"}[name]
            raise ValueError(f"ray_actor_options.resources.{name}: ask for it with "
                             f"ray_actor_options.{option}, not in resources")
        request[name] = _amount(value, f"resources.{name}", 0.0)
    accelerator = options.get("accelerator_type")
    if accelerator is not None:
        if not isinstance(accelerator, str) or not accelerator:
            raise ValueError("ray_actor_options.accelerator_type must be an accelerator's "
                             f"name such as \"A100\"; got {accelerator!r}")
        request[ACCELERATOR_PREFIX + accelerator] = ACCELERATOR_AMOUNT
    return {name: amount for name, amount in request.items() if _units(amount) > 0}


def _amount(value: Any, option: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"ray_actor_options.{option} must be a number; got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"ray_actor_options.{option} must be a finite number >= 0; "
                         f"got {value!r}")
    return float(value)


def _units(amount: float) -> int:
    return round(amount * UNITS)


@dataclass(frozen=True)
class PlacedReplica:
    """A replica already on a node: what it reserved and the GPU indices it holds."""

    key: DeploymentKey
    request: Resources
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class NodeView:
    """One live node as placement sees it: what it offers and what its replicas use."""

    node_id: str
    #: What the node offers: {"CPU": 8, "GPU": 2, "memory": bytes, custom names}.
    offered: Resources
    #: The sum of its live replicas' requests.
    used: Resources = field(default_factory=dict)
    #: How many replicas of each deployment run on it.
    replicas: Mapping[DeploymentKey, int] = field(default_factory=dict)
    #: GPU index -> the share of it in use (1 for a whole GPU); indices absent are free.
    gpu_use: Mapping[int, float] = field(default_factory=dict)

    def free(self, name: str) -> float:
        """How much of a resource is left (negative if the views overcommit it)."""
        return (_units(self.offered.get(name, 0.0)) - _units(self.used.get(name, 0.0))) / UNITS

    def with_replica(self, replica: PlacedReplica) -> NodeView:
        """This node with one more replica on it."""
        used = dict(self.used)
        for name, amount in replica.request.items():
            used[name] = (_units(used.get(name, 0.0)) + _units(amount)) / UNITS
        replicas = dict(self.replicas)
        replicas[replica.key] = replicas.get(replica.key, 0) + 1
        gpu_use = dict(self.gpu_use)
        gpus = replica.request.get(GPU, 0.0)
        share = gpus if gpus < 1 else 1.0
        for index in replica.gpu_indices:
            gpu_use[index] = (_units(gpu_use.get(index, 0.0)) + _units(share)) / UNITS
        return replace(self, used=used, replicas=replicas, gpu_use=gpu_use)


def node_view(node_id: str, offered: Resources,
              replicas: Iterable[PlacedReplica] = ()) -> NodeView:
    """The view of a node from what it offers and the live replicas on it."""
    view = NodeView(node_id, dict(offered))
    for replica in replicas:
        view = view.with_replica(replica)
    return view


@dataclass(frozen=True)
class Placement:
    """Run the replica on `node_id`, with CUDA_VISIBLE_DEVICES set to `gpu_indices`."""

    node_id: str
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class NoFit:
    """No node can take the replica now; `reason` says what it asks and what is free."""

    reason: str


def place(request: Resources, key: DeploymentKey, nodes: Iterable[NodeView], *,
          max_replicas_per_node: int | None = None) -> Placement | NoFit:
    """Choose the node for one replica of deployment `key` that reserves `request`.

    Fits: every requested amount is free on the node, the GPU indices exist (see the
    module's docstring), and the node runs fewer than `max_replicas_per_node` replicas of
    `key`. Among fitting nodes: fewest replicas of `key`, then most free CPU, then node_id.
    """
    nodes = list(nodes)
    best: tuple[tuple[int, int, str], Placement] | None = None
    for node in nodes:
        if _capped(node, key, max_replicas_per_node) or _short(node, request):
            continue
        gpu_indices = _pick_gpus(node, request.get(GPU, 0.0))
        if gpu_indices is None:
            continue
        rank = (node.replicas.get(key, 0), -_units(node.free(CPU)), node.node_id)
        if best is None or rank < best[0]:
            best = (rank, Placement(node.node_id, gpu_indices))
    if best is not None:
        return best[1]
    return NoFit(_no_fit_reason(request, key, nodes, max_replicas_per_node))


@dataclass(frozen=True)
class ReplicaAsk:
    """One replica to place in a pass: its deployment, request and per-node cap."""

    key: DeploymentKey
    request: Resources
    max_replicas_per_node: int | None = None


def place_many(asks: Iterable[ReplicaAsk], nodes: Iterable[NodeView]
               ) -> tuple[list[Placement | NoFit], list[NodeView]]:
    """Place several replicas in order, each seeing the ones placed before it.

    Returns one result per ask, in order, and the nodes' views with the placed replicas
    added (in the order given).
    """
    views = list(nodes)
    index = {view.node_id: i for i, view in enumerate(views)}
    results: list[Placement | NoFit] = []
    for ask in asks:
        result = place(ask.request, ask.key, views,
                       max_replicas_per_node=ask.max_replicas_per_node)
        if isinstance(result, Placement):
            i = index[result.node_id]
            views[i] = views[i].with_replica(
                PlacedReplica(ask.key, ask.request, result.gpu_indices))
        results.append(result)
    return results, views


def _capped(node: NodeView, key: DeploymentKey, cap: int | None) -> bool:
    return cap is not None and node.replicas.get(key, 0) >= cap


def _short(node: NodeView, request: Resources) -> list[str]:
    """The requested resources the node has too little of."""
    return [name for name, amount in request.items()
            if _units(node.free(name)) < _units(amount)]


def _pick_gpus(node: NodeView, gpus: float) -> tuple[int, ...] | None:
    """The GPU indices for a request of `gpus` on this node, or None if none fit."""
    wanted = _units(gpus)
    if wanted <= 0:
        return ()
    indices = range(math.floor(node.offered.get(GPU, 0.0)))
    use = {i: _units(node.gpu_use.get(i, 0.0)) for i in indices}
    if wanted < UNITS:
        roomy = [i for i in indices if use[i] + wanted <= UNITS]
        if not roomy:
            return None
        return (min(roomy, key=lambda i: (-use[i], i)),)
    idle = [i for i in indices if use[i] == 0]
    count = wanted // UNITS
    return tuple(idle[:count]) if len(idle) >= count else None


def _no_fit_reason(request: Resources, key: DeploymentKey, nodes: Sequence[NodeView],
                   cap: int | None) -> str:
    asked = f"replica of {key[0]}/{key[1]} requests {_format(request)}"
    if not nodes:
        return f"{asked}; no node is registered: start a node agent"
    names = list(request) or [CPU]
    listed = []
    for node in sorted(nodes, key=lambda n: n.node_id)[:NODES_LISTED]:
        free = _format({name: node.free(name) for name in names})
        if _capped(node, key, cap):
            free += (f" (already runs {node.replicas.get(key, 0)} of {key[0]}/{key[1]}: "
                     f"max_replicas_per_node={cap})")
        elif not _short(node, request) and _pick_gpus(node, request.get(GPU, 0.0)) is None:
            free += f" (no single GPU has {_number(request.get(GPU, 0.0))} free)" \
                if request.get(GPU, 0.0) < 1 else " (not that many GPUs wholly free)"
        listed.append(f"{node.node_id} {free}")
    if len(nodes) > NODES_LISTED:
        listed.append(f"and {len(nodes) - NODES_LISTED} more nodes")
    return f"{asked}; free: {', '.join(listed)}; no node fits"


def _format(resources: Resources) -> str:
    parts = [f"{name}: {_memory(amount) if name == MEMORY else _number(amount)}"
             for name, amount in resources.items()]
    return "{" + ", ".join(parts) + "}"


def _number(amount: float) -> str:
    rounded = round(float(amount), 4)
    return str(int(rounded)) if rounded.is_integer() else str(rounded)


def _memory(amount: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(amount) >= size:
            return f"{_number(round(amount / size, 2))}{unit}"
    return f"{_number(amount)}B"
