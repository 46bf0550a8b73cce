"""Autoscaling: how many replicas each autoscaled deployment should run, from its load.

Design. The load of a deployment is the requests its running replicas are working on
(each replica reports its `ongoing` count on its session) plus the requests waiting for a
replica in the callers' routers (proxies and handles report those, `weir.controller.
queue_reports`); at zero replicas, the waiting requests are the ones the proxies hold. The
leader samples that load on every reconcile pass; `decide` aggregates the samples of the
last look_back_period_s and turns them into a target replica count, with Ray Serve's rules:
- desired = load / target_ongoing_requests, the step from the running count scaled by
  upscaling_factor or downscaling_factor, bounded by min_replicas and max_replicas;
- a new target is applied only once every pass for upscale_delay_s (or downscale_delay_s)
  wanted a change the same way: a spike shorter than the delay, or a load that flaps
  around the target, changes nothing;
- a deployment goes to zero only from one replica, after downscale_to_zero_delay_s (else
  downscale_delay_s) of no load at all;
- at zero, any request held for it starts replicas at once (a cold start skips the delay:
  the held request is waiting).

Everything here is pure, with the clock passed in: the decision's memory (the window, the
pending change and since when) is a `ScalingState` value the leader keeps for its term.
A new leader has none and rebuilds it from what runs (`start_state`): it starts from the
running count, and since a change must be wanted for a whole delay from its first sample,
it never scales down right after a failover.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from weir.config.autoscaling import AutoscalingConfig
from weir.controller.reconciler import (
    LIVE_STATES,
    DeploymentTarget,
    ReplicaView,
    Views,
    by_deployment,
)

Key = tuple[str, str]


@dataclass(frozen=True)
class LoadSample:
    """A deployment's load at one moment."""

    at: float
    #: Ongoing requests of each running replica, as it last reported them.
    ongoing: Mapping[str, int] = field(default_factory=dict)
    #: Requests waiting in the callers' routers for a replica (held at zero included).
    queued: int = 0

    @property
    def total(self) -> int:
        """Every request of the deployment in the system now."""
        return sum(self.ongoing.values()) + self.queued


@dataclass(frozen=True)
class ScalingState:
    """What the decision remembers of one deployment between passes."""

    #: The replica count the deployment should run.
    target: int
    #: The samples of the look-back period (and the one just before it).
    window: tuple[LoadSample, ...] = ()
    #: The change every pass has wanted since `since`: +1 up, -1 down, 0 none.
    wanted: int = 0
    since: float = 0.0
    #: The aggregated load of the last decision (for status).
    load: float = 0.0


@dataclass(frozen=True)
class ScalingChange:
    """A target that changed in a pass, and why (for the log)."""

    key: Key
    old: int
    new: int
    reason: str


def ceil_replicas(value: float) -> int:
    """A replica count from a fractional one, rounding up; float noise (2.0000000001
    replicas) is not a replica more."""
    return math.ceil(round(value, 6))


def start_state(config: AutoscalingConfig, live: int) -> ScalingState:
    """The state of a deployment the leader has no memory of: from the `live` replicas it
    runs (a new leader, or autoscaling just turned on), or its initial_replicas if none."""
    return ScalingState(target=config.clamp(live) if live else config.start_replicas)


def aggregate(window: Sequence[LoadSample], start: float, now: float,
              how: str = "mean") -> float:
    """The load over [start, now]: the mean weights each sample by how long it held (until
    the next sample, or now); max and min take the samples that held in the period."""
    if not window:
        return 0.0
    spans = []
    for i, sample in enumerate(window):
        end = window[i + 1].at if i + 1 < len(window) else now
        spans.append((max(0.0, end - max(sample.at, start)), sample.total))
    held = [(w, v) for w, v in spans if w > 0]
    if not held:
        return float(window[-1].total)
    if how == "max":
        return float(max(v for _, v in held))
    if how == "min":
        return float(min(v for _, v in held))
    return sum(w * v for w, v in held) / sum(w for w, _ in held)


def desired_replicas(config: AutoscalingConfig, load: float, running: int) -> int:
    """The replica count `load` asks for, from `running` replicas: Ray Serve's queue-length
    rule with its gains and bounds, before any delay."""
    wanted = load / config.target_ongoing_requests
    delta = wanted - running
    gain = config.upscale_gain if delta > 0 else config.downscale_gain
    stepped = ceil_replicas(running + gain * delta)
    if ceil_replicas(wanted) < running and stepped == running:
        # A small gain would round every step down back to `running`: step by one.
        stepped -= 1
    return config.clamp(stepped)


def _trimmed(window: Sequence[LoadSample], start: float) -> tuple[LoadSample, ...]:
    """The samples at or after `start`, and the last one before it (it held at `start`)."""
    first = 0
    for i, sample in enumerate(window):
        if sample.at <= start:
            first = i
    return tuple(window[first:])


def decide(config: AutoscalingConfig, state: ScalingState, sample: LoadSample, *,
           running: int, now: float) -> tuple[ScalingState, str]:
    """One pass of the decision: the state with `sample` taken in and maybe a new target,
    and why the target changed ("" if it did not). `running`: replicas serving now."""
    start = now - config.look_back_period_s
    window = _trimmed((*state.window, sample), start)
    load = aggregate(window, start, now, config.aggregation_function)
    state = replace(state, window=window, load=load, target=config.clamp(state.target))
    if running == 0:
        # Nothing serves: the requests held now are the only load that counts, and they
        # wait for a replica, so no delay applies. Nothing else is decided until replicas
        # serve and their load can be seen.
        state = replace(state, wanted=0)
        if sample.total > 0:
            cold = config.clamp(max(ceil_replicas(config.upscale_gain), state.target))
            if cold > state.target:
                return (replace(state, target=cold),
                        f"{sample.total} request(s) held with no replica running")
        return state, ""
    desired = desired_replicas(config, load, running)
    if desired > state.target:
        wanted, delay = 1, config.upscale_delay_s
    elif desired < state.target:
        wanted = -1
        if state.target == 1:
            delay = config.to_zero_delay_s
        else:
            # Zero only from one replica, after its own delay.
            delay, desired = config.downscale_delay_s, max(1, desired)
    else:
        return replace(state, wanted=0), ""
    if state.wanted != wanted:
        state = replace(state, wanted=wanted, since=now)
    if now - state.since < delay:
        return state, ""
    reason = (f"{load:.2f} requests on average over {config.look_back_period_s:g} s for "
              f"{running} running replica(s), {config.target_ongoing_requests:g} wanted "
              f"per replica, for {now - state.since:.1f} s")
    return replace(state, target=desired, wanted=0), reason


# ----------------------------------------------------------------- the leader's step


def live_replicas(views: Iterable[ReplicaView], version: str) -> int:
    """How many replicas a deployment runs, counted so that a rolling update is not taken
    for a bigger deployment: the new version's live replicas, or the old ones still kept
    plus the new running ones, whichever is more."""
    live = [v for v in views if v.state in LIVE_STATES and not v.stopping]
    new = [v for v in live if v.version == version]
    new_running = sum(1 for v in new if v.state == "RUNNING")
    return max(len(new), len(live) - len(new) + new_running)


def scale_targets(
    targets: Mapping[Key, DeploymentTarget],
    configs: Mapping[Key, AutoscalingConfig],
    views: Views,
    queued: Mapping[Key, int],
    states: Mapping[Key, ScalingState],
    *,
    now: float,
    deciding: bool = True,
) -> tuple[dict[Key, DeploymentTarget], dict[Key, ScalingState], list[ScalingChange]]:
    """The step between judging and planning: every target, the autoscaled ones (those in
    `configs`) sized by their decision; the states to keep; the targets that changed.

    `views`: every replica's view, or the views grouped by deployment (only the
    autoscaled deployments' are read). `queued`: requests waiting in the callers' routers,
    per deployment. `deciding`: False
    while a new leader waits for the replicas to re-register (their load is unknown yet):
    the states are started from what runs, and nothing is decided.
    """
    groups = by_deployment(views)
    out = dict(targets)
    kept: dict[Key, ScalingState] = {}
    changes = []
    for key, config in configs.items():
        target = targets.get(key)
        if target is None:
            continue
        group = groups.get(key, ())
        state = states.get(key) or start_state(config, live_replicas(group, target.version))
        if deciding:
            running = [v for v in group if v.state == "RUNNING" and not v.stopping]
            sample = LoadSample(now, {v.replica_id: v.ongoing for v in running},
                                queued.get(key, 0))
            old = state.target
            state, reason = decide(config, state, sample, running=len(running), now=now)
            if reason:
                changes.append(ScalingChange(key, old, state.target, reason))
        else:
            state = replace(state, target=config.clamp(state.target))
        kept[key] = state
        out[key] = replace(target, num_replicas=state.target)
    return out, kept, changes


def with_decisions(targets: Mapping[Key, DeploymentTarget],
                   states: Mapping[Key, ScalingState]) -> dict[Key, DeploymentTarget]:
    """`targets` with the autoscaled ones sized as last decided (reads change nothing)."""
    return {k: replace(t, num_replicas=states[k].target) if k in states else t
            for k, t in targets.items()}


def describe(config: AutoscalingConfig, state: ScalingState) -> dict[str, object]:
    """What `weir status` shows of a deployment's autoscaling."""
    return {"target_num_replicas": state.target, "min_replicas": config.min_replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests,
            "ongoing_requests": round(state.load, 2)}
