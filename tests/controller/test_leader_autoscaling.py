"""The autoscaling step inside the leader's loop, on the in-memory store with a manual clock:
held requests start a replica from zero at once, idle deployments go back to zero, and a
new leader starts from what runs without scaling down."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from tests.controller.test_leader import Harness, SimulatedReplica, run
from weir.build import BuiltApp, DeploymentSpec
from weir.controller.goal import AppGoal
from weir.controller.leader import Leader
from weir.etcd.keys import APPS_PREFIX
from weir.protos import weir_pb2 as pb

KEY = ("app", "D")
SCALE_TO_ZERO = {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 1,
                 "upscale_delay_s": 1.0, "downscale_delay_s": 2.0,
                 "downscale_to_zero_delay_s": 1.0, "look_back_period_s": 1.0}


async def deploy_autoscaled(h: Harness, autoscaling: dict[str, Any]) -> None:
    spec = DeploymentSpec("app", "D", {"autoscaling_config": autoscaling}, b"v1", ingress=True)
    goal = AppGoal(name="app", config={"name": "app"}, deployment_timestamp=1.0,
                   build_key="k", built_json=BuiltApp("app", [spec]).to_json())
    await h.node.run_assigned()  # registers the node
    await h.store.put(APPS_PREFIX + "app", goal.to_bytes())


async def report(replica: SimulatedReplica, state: pb.ReplicaState, ongoing: int = 0) -> None:
    await replica.report(state, version=replica.record.version, ongoing=ongoing)


async def register(h: Harness, leader: Leader, index: int) -> SimulatedReplica:
    record = h.node.launched[index]
    replica = SimulatedReplica(leader, record, 1000 + index + 1)
    h.replicas.append(replica)
    await report(replica, pb.STARTING)
    await report(replica, pb.RUNNING)
    return replica


async def reconcile(h: Harness, leader: Leader) -> None:
    """One pass of `leader`, then the node agent starts and kills what it was told."""
    await leader.reconcile_once()
    await h.node.run_assigned()


async def settle() -> None:
    """Let the sessions deliver the commands a pass queued."""
    for _ in range(5):
        await asyncio.sleep(0)


def live(h: Harness) -> int:
    return len(h.node.record.replicas)


def autoscaling_status(leader: Leader) -> dict[str, Any]:
    return leader.status()["app"]["deployment_statuses"][0]["autoscaling"]  # type: ignore[no-any-return]


def test_a_held_request_starts_a_replica_at_once_and_idleness_returns_to_zero() -> None:
    async def scenario() -> None:
        h = Harness()
        await deploy_autoscaled(h, SCALE_TO_ZERO)
        await reconcile(h, h.leader)
        assert h.node.launched == []
        assert autoscaling_status(h.leader)["target_num_replicas"] == 0
        # A proxy holds one request: the report wakes the loop, whose next pass starts one.
        caller = object()
        h.leader._wake.clear()
        h.leader.queues.take(caller, pb.QueueReport(caller="proxy:p", queues=[
            pb.DeploymentQueue(app="app", deployment="D", queued=1)]))
        assert h.leader._wake.is_set()
        await reconcile(h, h.leader)
        assert len(h.node.launched) == 1
        replica = await register(h, h.leader, 0)
        h.leader.queues.take(caller, pb.QueueReport(caller="proxy:p"))
        await reconcile(h, h.leader)
        assert h.leader.status()["app"]["app_status"]["status"] == "RUNNING"
        # No traffic: the last replica stops after downscale_to_zero_delay_s, not before.
        for _ in range(3):
            h.clock.advance(0.3)
            await reconcile(h, h.leader)
            await settle()
            assert not [c for c in replica.commands if c.kind == pb.STOP]
        h.clock.advance(0.5)
        await reconcile(h, h.leader)
        await settle()
        assert [c.kind for c in replica.commands][-1] == pb.STOP
        assert autoscaling_status(h.leader)["target_num_replicas"] == 0
        h.close()

    run(scenario())


def test_load_raises_the_target_after_the_upscale_delay() -> None:
    async def scenario() -> None:
        h = Harness()
        await deploy_autoscaled(h, {**SCALE_TO_ZERO, "min_replicas": 1})
        await reconcile(h, h.leader)
        replica = await register(h, h.leader, 0)
        await report(replica, pb.RUNNING, ongoing=3)
        # Requests queued behind a running replica wait for the next tick, like its load.
        h.leader._wake.clear()
        h.leader.queues.take(object(), pb.QueueReport(caller="proxy:p", queues=[
            pb.DeploymentQueue(app="app", deployment="D", queued=0)]))
        h.leader.queues.take(object(), pb.QueueReport(caller="handle:1", queues=[
            pb.DeploymentQueue(app="app", deployment="D", queued=1)]))
        assert not h.leader._wake.is_set()
        for _ in range(3):
            await reconcile(h, h.leader)
            h.clock.advance(0.4)
        assert len(h.node.launched) == 1
        await reconcile(h, h.leader)
        assert len(h.node.launched) == 4  # 3 ongoing + 1 queued, 1 wanted per replica
        assert autoscaling_status(h.leader)["target_num_replicas"] == 4
        h.close()

    run(scenario())


def test_a_new_leader_starts_from_the_running_count_and_does_not_scale_down_at_once() -> None:
    async def scenario() -> None:
        h = Harness()
        await deploy_autoscaled(h, {**SCALE_TO_ZERO, "min_replicas": 1, "initial_replicas": 3})
        await reconcile(h, h.leader)
        assert len(h.node.launched) == 3
        # The leader dies; its successor knows nothing but the records in the store.
        await h.leader.stop()
        h.close()
        successor = Leader(h.store, python_executable=sys.executable,
                           clock=h.clock, wall_clock=lambda: 1e9 + h.clock())
        successor.started = h.clock()
        await reconcile(h, successor)
        assert successor.scaling[KEY].target == 3 and live(h) == 3
        for i in range(3):
            await register(h, successor, i)
        # Idle, but it is a whole downscale delay before anything stops.
        for _ in range(4):
            h.clock.advance(0.45)
            await reconcile(h, successor)
            assert successor.scaling[KEY].target == 3
        h.clock.advance(0.7)
        await reconcile(h, successor)
        assert successor.scaling[KEY].target == 1
        for replica in h.replicas:
            replica.close()
        await successor.stop()

    run(scenario())
