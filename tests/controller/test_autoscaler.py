"""The autoscaling decision against scripted load traces, with a clock the test moves.

`simulate` plays a trace the way the leader sees it: a pass every TICK seconds, replicas
that serve STARTUP seconds after the target asks for them (and stop at once), each taking
up to MAX_ONGOING requests, the rest waiting in the callers' queues.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from weir.config.autoscaling import AutoscalingConfig
from weir.controller.autoscaler import (
    LoadSample,
    ScalingState,
    aggregate,
    decide,
    desired_replicas,
    live_replicas,
    scale_targets,
    start_state,
    with_decisions,
)
from weir.controller.reconciler import DeploymentTarget, ReplicaView

TICK = 0.5
STARTUP = 1.0
MAX_ONGOING = 5


@dataclass
class Point:
    at: float
    target: int
    running: int


def sample_of(at: float, requests: int, running: int) -> LoadSample:
    """`requests` spread over `running` replicas, the rest queued."""
    ongoing = {}
    left = requests
    for i in range(running):
        ongoing[f"r{i}"] = min(MAX_ONGOING, left)
        left -= ongoing[f"r{i}"]
    return LoadSample(at, ongoing, queued=left)


def simulate(config: AutoscalingConfig, requests: Callable[[float], int], until: float,
             replicas: int) -> list[Point]:
    state = ScalingState(target=replicas)
    running = replicas
    ready_at: list[float] = []  # when each replica asked for, not serving yet, will serve
    trace = []
    t = 0.0
    while t <= until:
        ready_at = sorted(ready_at)
        while ready_at and ready_at[0] <= t:
            ready_at.pop(0)
            running += 1
        state, _ = decide(config, state, sample_of(t, requests(t), running),
                          running=running, now=t)
        if state.target > running + len(ready_at):
            ready_at += [t + STARTUP] * (state.target - running - len(ready_at))
        elif state.target < running + len(ready_at):
            surplus = running + len(ready_at) - state.target
            cancelled = min(surplus, len(ready_at))
            ready_at = ready_at[cancelled:]
            running -= surplus - cancelled
        trace.append(Point(t, state.target, running))
        t = round(t + TICK, 6)
    return trace


def target_at(trace: list[Point], at: float) -> int:
    return [p for p in trace if p.at <= at][-1].target


def changes(trace: list[Point]) -> list[tuple[float, int]]:
    out = []
    for before, after in itertools.pairwise(trace):
        if after.target != before.target:
            out.append((after.at, after.target))
    return out


def config(**kw: object) -> AutoscalingConfig:
    base: dict[str, object] = {"min_replicas": 1, "max_replicas": 10,
                               "target_ongoing_requests": 2, "look_back_period_s": 1.0,
                               "upscale_delay_s": 3.0, "downscale_delay_s": 10.0}
    return AutoscalingConfig.model_validate({**base, **kw})


# ----------------------------------------------------------------- traces


def test_step_up_scales_after_the_upscale_delay_and_not_before() -> None:
    trace = simulate(config(), lambda t: 12 if t >= 10 else 2, until=20, replicas=1)
    assert target_at(trace, 12.5) == 1
    # Held for the whole 3 s delay from the first pass that saw the step (or the next one,
    # once the look-back window is mostly the new load).
    first = changes(trace)[0]
    assert 13.0 <= first[0] <= 14.0
    assert target_at(trace, 20) == 6  # 12 requests, 2 per replica
    assert trace[-1].running == 6


def test_step_down_waits_the_downscale_delay() -> None:
    trace = simulate(config(), lambda t: 2 if t >= 5 else 12, until=20, replicas=6)
    assert target_at(trace, 14.5) == 6
    assert changes(trace) == [(pytest.approx(15.5, abs=0.6), 1)]


def test_a_spike_shorter_than_the_upscale_delay_changes_nothing() -> None:
    trace = simulate(config(), lambda t: 40 if 5 <= t < 7 else 2, until=20, replicas=1)
    assert changes(trace) == []


def test_flapping_load_does_not_flap_the_replicas() -> None:
    # 1 and 8 requests, a second each: every change of direction restarts the delay.
    def flapping(t: float) -> int:
        return 8 if int(t) % 2 else 1

    assert changes(simulate(config(), flapping, until=30, replicas=2)) == []
    # Over a look-back longer than the period it is a steady 4.5 requests: one step up.
    smoothed = simulate(config(look_back_period_s=4.0), flapping, until=30, replicas=1)
    assert [n for _, n in changes(smoothed)] == [3]


def test_no_load_goes_to_zero_one_replica_last_after_its_own_delay() -> None:
    cfg = config(min_replicas=0, downscale_delay_s=5.0, downscale_to_zero_delay_s=2.0)
    trace = simulate(cfg, lambda t: 0, until=12, replicas=3)
    assert changes(trace) == [(pytest.approx(5.0, abs=0.6), 1), (pytest.approx(7.0, abs=0.6), 0)]


def test_zero_without_a_to_zero_delay_waits_the_downscale_delay() -> None:
    cfg = config(min_replicas=0, downscale_delay_s=2.0)
    assert changes(simulate(cfg, lambda t: 0, until=6, replicas=1)) == [
        (pytest.approx(2.0, abs=0.6), 0)]


def test_a_request_held_at_zero_starts_a_replica_at_once() -> None:
    cfg = config(min_replicas=0, upscale_delay_s=30.0)
    trace = simulate(cfg, lambda t: 1 if t >= 2 else 0, until=5, replicas=0)
    assert changes(trace) == [(2.0, 1)]
    assert trace[-1].running == 1
    fast = config(min_replicas=0, upscaling_factor=2.0)
    state, reason = decide(fast, ScalingState(target=0), LoadSample(0.0, {}, queued=1),
                           running=0, now=0.0)
    assert state.target == 2 and "held" in reason


def test_bounds_hold_whatever_the_load() -> None:
    cfg = config(min_replicas=2, max_replicas=4, upscale_delay_s=0.0, downscale_delay_s=0.0)
    trace = simulate(cfg, lambda t: 100 if t < 5 else 0, until=10, replicas=2)
    assert max(p.target for p in trace) == 4
    assert trace[-1].target == 2


def test_a_zero_delay_scales_on_the_first_pass() -> None:
    cfg = config(upscale_delay_s=0.0)
    state, reason = decide(cfg, ScalingState(target=1), sample_of(0.0, 8, 1), running=1,
                           now=0.0)
    assert state.target == 4 and reason


# ----------------------------------------------------------------- the parts


def test_gains_scale_each_step() -> None:
    assert desired_replicas(config(), load=12, running=2) == 6
    assert desired_replicas(config(upscaling_factor=0.5), load=12, running=2) == 4
    assert desired_replicas(config(downscaling_factor=0.5), load=2, running=6) == 4
    # A gain so small it would round every step away still moves by one.
    assert desired_replicas(config(downscaling_factor=0.01), load=2, running=6) == 5


def test_the_mean_weights_each_sample_by_how_long_it_held() -> None:
    window = [LoadSample(0.0, {"a": 10}), LoadSample(1.0, {"a": 0}), LoadSample(4.0, {"a": 4})]
    assert aggregate(window, start=0.0, now=5.0) == pytest.approx((10 + 0 + 4) / 5)
    # Only the part in the period counts.
    assert aggregate(window, start=3.0, now=5.0) == pytest.approx((0 + 4) / 2)
    assert aggregate(window, start=3.0, now=5.0, how="max") == 4
    assert aggregate(window, start=0.0, now=5.0, how="min") == 0
    assert aggregate([LoadSample(7.0, {"a": 3}, queued=2)], start=0.0, now=7.0) == 5
    assert aggregate([], start=0.0, now=1.0) == 0


def test_the_window_keeps_only_the_look_back_period() -> None:
    cfg = config(look_back_period_s=2.0)
    state = ScalingState(target=1)
    for t in range(10):
        state, _ = decide(cfg, state, sample_of(float(t), 1, 1), running=1, now=float(t))
    assert [s.at for s in state.window] == [7.0, 8.0, 9.0]


def test_a_new_config_bounds_the_target_at_once() -> None:
    state, _ = decide(config(max_replicas=3), ScalingState(target=6), sample_of(0, 12, 6),
                      running=6, now=0.0)
    assert state.target == 3


def test_start_state_is_what_runs_or_the_initial_replicas() -> None:
    cfg = config(min_replicas=0, max_replicas=4, initial_replicas=2)
    assert start_state(cfg, live=0).target == 2
    assert start_state(cfg, live=3).target == 3
    assert start_state(cfg, live=9).target == 4
    assert start_state(config(min_replicas=0), live=0).target == 0


# ----------------------------------------------------------------- the leader's step

T = DeploymentTarget("app", "D", "v2", 1, "null")
FIXED = DeploymentTarget("app", "F", "v1", 3, "null")


def view(i: int, state: str = "RUNNING", version: str = "v2", ongoing: int = 0,
         stopping: bool = False) -> ReplicaView:
    return ReplicaView(f"r{i}", "app", "D", version, state, stopping=stopping,
                       ongoing=ongoing)


def test_a_rolling_update_is_not_counted_as_a_bigger_deployment() -> None:
    # Target 3 mid-roll: 3 new (1 running), 2 old kept serving.
    views = [view(1), view(2, "STARTING"), view(3, "PENDING"),
             view(4, version="v1"), view(5, version="v1"), view(6, stopping=True)]
    assert live_replicas(views, "v2") == 3
    assert live_replicas([view(1, version="v1"), view(2, version="v1")], "v2") == 2


def test_after_a_failover_the_leader_starts_from_what_runs_and_does_not_scale_down() -> None:
    cfg = config(min_replicas=1, max_replicas=10, downscale_delay_s=5.0)
    views = [view(i, "PENDING") for i in range(4)]  # re-registering, load unknown
    targets = {("app", "D"): T, ("app", "F"): FIXED}
    out, states, _ = scale_targets(targets, {("app", "D"): cfg}, views, {}, {}, now=0.0,
                                   deciding=False)
    assert out[("app", "D")].num_replicas == 4 and out[("app", "F")] == FIXED
    assert states[("app", "D")].window == ()
    # Idle once registered: the count holds for the whole delay, then falls.
    idle = [view(i) for i in range(4)]
    t = 0.0
    while t < 4.9:
        t += TICK
        out, states, changed = scale_targets(targets, {("app", "D"): cfg}, idle, {}, states,
                                             now=t)
        assert out[("app", "D")].num_replicas == 4 and not changed
    out, states, changed = scale_targets(targets, {("app", "D"): cfg}, idle, {}, states,
                                         now=t + 1.0)
    assert out[("app", "D")].num_replicas == 1
    assert [(c.key, c.old, c.new) for c in changed] == [(("app", "D"), 4, 1)]


def test_queued_requests_count_as_load_and_states_of_gone_deployments_drop() -> None:
    cfg = config(upscale_delay_s=0.0)
    states = {("app", "D"): ScalingState(target=1), ("app", "Gone"): ScalingState(target=2)}
    out, kept, changed = scale_targets({("app", "D"): T}, {("app", "D"): cfg},
                                       [view(1, ongoing=5)], {("app", "D"): 5}, states, now=1.0)
    assert out[("app", "D")].num_replicas == 5  # 10 requests, 2 per replica
    assert set(kept) == {("app", "D")} and changed
    assert with_decisions({("app", "D"): T, ("app", "F"): FIXED}, kept) == {
        ("app", "D"): DeploymentTarget("app", "D", "v2", 5, "null"), ("app", "F"): FIXED}
