"""A pass that judges, rolls up and plans only the deployments that changed decides what
doing them all decides."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from weir.controller.deployment_changes import (
    DeploymentChanges,
    DeploymentInputs,
    PlanInputs,
    deployment_inputs,
    unchanged_deployments,
    unsettled_deployments,
)
from weir.controller.health import DeploymentHealth, judge, may_start
from weir.controller.observations import differs_beyond_load
from weir.controller.reconciler import DeploymentTarget, ReplicaView, Start, Stop, plan
from weir.controller.status import AppView, roll_up
from weir.controller.sweep import Sweep
from weir.statuses import DeploymentStatus as S

Key = tuple[str, str]
KEYS: list[Key] = [("a", "D1"), ("a", "D2"), ("b", "D3")]
STATES = ["PENDING", "STARTING", "RUNNING", "RUNNING", "RUNNING", "FAILED", "DEAD",
          "UNHEALTHY", "STOPPING"]


def target(key: Key, version: str = "v1", n: int = 2, config: str = "1") -> DeploymentTarget:
    return DeploymentTarget(key[0], key[1], version, n, config)


def test_a_deployment_is_unchanged_only_with_the_same_inputs_no_change_and_settled() -> None:
    a, b, c, d = KEYS[0], KEYS[1], KEYS[2], ("z", "D")
    last = {k: DeploymentInputs(target(k)) for k in (a, b, c)}
    now = {**last, c: DeploymentInputs(target(c, n=3)), d: DeploymentInputs(None)}
    assert unchanged_deployments(now, last, changed={a}, unsettled=set()) == {b}
    assert unchanged_deployments(now, last, changed=set(), unsettled={b}) == {a}


def test_a_pass_leaves_unsettled_what_changed_or_planned() -> None:
    a, b, c = KEYS
    health = {k: DeploymentHealth(version="v1") for k in KEYS}
    after = {**health, a: replace(health[a], consecutive_failures=1)}
    assert unsettled_deployments([a, b, c], health, after, {}, {}, planned={c}) == {a, c}
    # A deployment not done again is settled as the last pass left it.
    assert unsettled_deployments([b], health, after, {}, {}, planned={c}) == set()


def test_plan_inputs_a_backoff_ending_or_a_scaled_target_make_it_planned_again() -> None:
    a, b, c = KEYS
    changes = DeploymentChanges()
    inputs = {k: DeploymentInputs(target(k)) for k in KEYS}
    plan_inputs = {k: PlanInputs(target(k), may_start=False) for k in KEYS}
    changes.passed(inputs, plan_inputs, unsettled=())
    unchanged = changes.unchanged(inputs, now=0.0, sweep_s=1e9)
    assert unchanged == set(KEYS)
    later = {**plan_inputs, a: PlanInputs(target(a), may_start=True),
             b: PlanInputs(target(b, n=5), may_start=False)}
    assert changes.plan_unchanged(unchanged, later) == {c}


def test_the_sweep_takes_every_deployment_again_within_its_time() -> None:
    changes = DeploymentChanges()
    inputs = {k: DeploymentInputs(target(k)) for k in KEYS}
    changes.passed(inputs, {}, unsettled=())
    taken: set[Key] = set()
    now = 0.0
    while now <= 5.0:
        taken |= set(KEYS) - changes.unchanged(inputs, now=now, sweep_s=5.0)
        changes.passed(inputs, {}, unsettled=())
        now += 0.5
    assert taken == set(KEYS)


def test_a_sweep_of_one_takes_it_once_a_period() -> None:
    sweep: Sweep[str] = Sweep()
    taken = [t for t in range(40) if sweep.share(["only"], t * 0.5, 5.0)]
    # Once every 10 passes of 0.5 s (not every other pass).
    assert [b - a for a, b in itertools.pairwise(taken)] == [10] * (len(taken) - 1)
    assert len(taken) >= 3


def test_a_sweep_takes_every_member_of_its_start_within_its_period_once() -> None:
    sweep: Sweep[int] = Sweep()
    members = list(range(103))
    seen: list[int] = []
    now = 0.0
    while now < 5.0:
        seen += sweep.share(members, now, 5.0)
        now += 0.37
    seen += sweep.share(members, 5.0, 5.0)
    assert sorted(seen) == members


def test_only_a_change_beyond_the_load_is_a_change() -> None:
    view = ReplicaView("r1", "a", "D1", "v1", "RUNNING", ongoing=1)
    assert not differs_beyond_load(view, replace(view, ongoing=5))
    for field, value in (("state", "FAILED"), ("stopping", True), ("message", "m"),
                         ("version", "v2"), ("pending_user_config", "2"),
                         ("last_state", "RUNNING"), ("user_config_json", "3")):
        assert differs_beyond_load(view, replace(view, **{field: value})), field


def _mutate(rng: random.Random, views: dict[str, ReplicaView], targets: dict[Key, DeploymentTarget],
            step: int, actions: list) -> dict[str, object]:
    """One random change of the inputs; what else the pass reads this time."""
    extra: dict[str, object] = {"errors": {}, "unplaced": {}, "frozen": frozenset()}
    roll = rng.randrange(12)
    rids = list(views)
    if roll == 0 or not rids:
        key = rng.choice(KEYS)
        rid = f"{key[1]}#{step}"
        views[rid] = ReplicaView(rid, key[0], key[1], rng.choice(["v1", "v2"]),
                                 rng.choice(STATES), user_config_json=rng.choice(["1", "2"]))
    elif roll == 1:
        del views[rng.choice(rids)]
    elif roll == 2:
        rid = rng.choice(rids)
        views[rid] = replace(views[rid], state=rng.choice(STATES),
                             message=rng.choice(["", "boom"]))
    elif roll == 3:
        rid = rng.choice(rids)
        views[rid] = replace(views[rid], ongoing=rng.randrange(5))  # load only
    elif roll == 4:
        key = rng.choice(KEYS)
        targets[key] = target(key, rng.choice(["v1", "v2"]), rng.randrange(4),
                              rng.choice(["1", "2"]))
    elif roll == 5:
        targets.pop(rng.choice(KEYS), None)
    elif roll == 6:
        extra["errors"] = {rng.choice(KEYS): "runtime_env failed"}
    elif roll == 7:
        extra["unplaced"] = {rng.choice(KEYS): "no node has room"}
    elif roll == 8:
        extra["frozen"] = frozenset({"b"})
    elif roll == 9 and actions:
        # The last pass's actions took effect (some of them).
        for action in rng.sample(actions, min(3, len(actions))):
            if isinstance(action, Start):
                rid = f"{action.deployment}#{step}#{rng.randrange(1000)}"
                views[rid] = ReplicaView(rid, action.app, action.deployment, action.version,
                                         "PENDING")
            elif isinstance(action, Stop) and action.replica_id in views:
                views[action.replica_id] = replace(views[action.replica_id], stopping=True)
            elif action.replica_id in views:
                del views[action.replica_id]
    return extra


def test_the_pass_per_changed_deployment_decides_what_the_whole_pass_decides() -> None:
    # A random walk of the pass's inputs, decided twice: everything again each pass, and
    # only the deployments `DeploymentChanges` says changed (the sweep switched off, so
    # that the change detection alone is tested). Judgements, statuses, documents and
    # plans must agree after every pass, and the walk must have skipped deployments.
    rng = random.Random(18)
    views: dict[str, ReplicaView] = {}
    targets = {k: target(k) for k in KEYS}
    apps = [AppView("a", 1.0, True, deployments=["D1", "D2"]),
            AppView("b", 1.0, True, deployments=["D3"])]
    health_all: dict[Key, DeploymentHealth] = {}
    health_some: dict[Key, DeploymentHealth] = {}
    statuses_all: dict = {}
    statuses_some: dict = {}
    counts: dict[Key, dict[str, int]] = {}
    changes = DeploymentChanges()
    last_views: dict[Key, list[ReplicaView]] = {}
    actions: list = []
    skipped = 0
    seen: set[str] = set()
    now = 10.0
    for step in range(1500):
        extra = _mutate(rng, views, targets, step, actions)
        now += rng.choice([0.01, 0.5, 5.0])
        errors, unplaced, frozen = extra["errors"], extra["unplaced"], extra["frozen"]
        listed = list(views.values())
        groups: dict[Key, list[ReplicaView]] = {}
        for v in listed:
            groups.setdefault((v.app, v.deployment), []).append(v)
        changed = {k for k in groups.keys() | last_views.keys()
                   if len(groups.get(k, [])) != len(last_views.get(k, []))
                   or any(a.replica_id != b.replica_id or differs_beyond_load(a, b)
                          for a, b in zip(groups.get(k, []), last_views.get(k, []),
                                          strict=False))}
        last_views = {k: list(g) for k, g in groups.items()}

        health_all = judge(targets, listed, health_all, now=now, start_errors=errors,
                           unplaced=unplaced)
        everything = roll_up(apps, targets, listed, health_all, statuses_all)
        statuses_all = everything.statuses
        planned = plan(targets.values(), listed, may_start=may_start(health_all, targets, now),
                       frozen_apps=frozen)

        changes.note(changed)
        inputs = deployment_inputs(targets, groups, (), frozen, errors, unplaced)
        unchanged = changes.unchanged(inputs, now, sweep_s=1e9)
        before = health_some, statuses_some
        health_some = judge(targets, groups, health_some, now=now, start_errors=errors,
                            unplaced=unplaced, unchanged=unchanged)
        some = roll_up(apps, targets, groups, health_some, statuses_some,
                       unchanged=unchanged, counts=counts)
        statuses_some, counts = some.statuses, some.counts
        allowed = may_start(health_some, targets, now)
        plan_inputs = {k: PlanInputs(targets.get(k), k in allowed) for k in inputs}
        plan_unchanged = changes.plan_unchanged(unchanged, plan_inputs)
        planned_some = plan(targets.values(), groups, may_start=allowed, frozen_apps=frozen,
                            unchanged=plan_unchanged)
        changes.passed(inputs, plan_inputs, unsettled_deployments(
            [k for k in inputs if k not in plan_unchanged], before[0], health_some,
            before[1], statuses_some, planned_some.deployments))
        skipped += len(plan_unchanged)

        assert health_some == health_all, f"step {step}"
        assert statuses_some == statuses_all, f"step {step}"
        assert some.doc == everything.doc, f"step {step}"
        assert planned_some.actions == planned.actions, f"step {step}"
        actions = planned.actions
        seen |= {s.status for s in statuses_all.values()}
    assert skipped > 500, "the walk never left a deployment unchanged: it tests nothing"
    assert {S.HEALTHY, S.UPDATING, S.UNHEALTHY, S.DEPLOY_FAILED} <= seen, seen


def test_a_read_between_passes_rolls_up_again_what_is_not_settled_or_was_resized() -> None:
    a, b, c = KEYS
    changes = DeploymentChanges()
    inputs = {k: DeploymentInputs(target(k)) for k in KEYS}
    changes.passed(inputs, {}, unsettled={a})
    now = {k: target(k) for k in KEYS} | {c: target(c, n=5)}
    assert changes.settled(now) == {b}
