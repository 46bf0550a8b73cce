"""Views kept across passes: viewing again only what changed sees what viewing all sees."""

from __future__ import annotations

import random
from dataclasses import replace

from weir.controller.nodes import AGENT_START_GRACE_S
from weir.controller.observations import (
    Observations,
    clock_due,
    differs_beyond_load,
    node_changes,
    observe_all,
)
from weir.controller.observe import REGISTER_TIMEOUT_S, ReplicaBook, SessionReport
from weir.controller.reconciler import ReplicaView
from weir.etcd.records import NodeRecord, ReplicaRecord

STATES = ["STARTING", "INITIALIZING", "RUNNING", "FAILED", "STOPPING"]


def node(node_id: str, replicas: dict[str, int], failed: dict[str, str] | None = None
         ) -> NodeRecord:
    return NodeRecord(node_id, "127.0.0.1", {"CPU": 8.0}, replicas=replicas,
                      failed=failed or {})


def test_node_changes_name_the_replicas_listed_or_failed_differently() -> None:
    before = {"n1": node("n1", {"a": 1, "b": 2}), "n2": node("n2", {"c": 3})}
    now = {"n1": node("n1", {"b": 2, "d": 4}, {"e": "exit 1"}), "n3": node("n3", {})}
    assert node_changes(before, now) == ({"a", "d", "e"}, {"n2", "n3"})
    assert node_changes(now, now) == (set(), set())


def test_viewing_only_what_changed_sees_what_viewing_everything_sees() -> None:
    # A random walk of the leader's inputs; the replicas' own changes (records, reports,
    # books) are announced with `touch` as the leader does, the rest (nodes, health, the
    # clock) are not: after every step the kept views must be what a full view gives.
    rng = random.Random(18)
    wall, mono = 1000.0, 50.0
    records: dict[str, ReplicaRecord] = {}
    reports: dict[str, SessionReport] = {}
    nodes = {"n1": node("n1", {}), "n2": node("n2", {})}
    failures: dict[str, str] = {}
    obs = Observations()
    reviewed_fewer = 0
    previous: dict[str, ReplicaView] = {}
    for step in range(600):
        rids = list(records)
        action = rng.randrange(9)
        if action == 0 or not rids:
            rid = f"app#D#{step}"
            records[rid] = ReplicaRecord(rid, "app", rng.choice(["D", "E"]), "v1", pid=0,
                                         started_at=wall,
                                         node_id=rng.choice(["n1", "n2", "n3"]))
            if rng.random() < 0.5:
                obs.touch(rid)  # the set difference must catch the others
        elif action == 1:
            rid = rng.choice(rids)
            del records[rid]
            reports.pop(rid, None)
            failures.pop(rid, None)
            obs.touch(rid)
        elif action == 2:
            rid = rng.choice(rids)
            reports[rid] = SessionReport(connected=rng.random() < 0.8,
                                         state=rng.choice(STATES), ongoing=rng.randrange(3),
                                         user_config_json=rng.choice(["", "1"]))
            obs.touch(rid)
        elif action == 3:
            rid = rng.choice(rids)
            n = records[rid].node_id
            if n in nodes:
                listed = dict(nodes[n].replicas)
                failed = dict(nodes[n].failed)
                if rid in listed:
                    del listed[rid]
                    if rng.random() < 0.5:
                        failed[rid] = "exit 1"
                else:
                    listed[rid] = 1
                nodes = {**nodes, n: replace(nodes[n], replicas=listed, failed=failed)}
        elif action == 4:
            n = rng.choice(["n1", "n2", "n3"])
            nodes = dict(nodes)
            if n in nodes:
                del nodes[n]
            else:
                nodes[n] = node(n, {})
        elif action == 5:
            rid = rng.choice(rids)
            if rid in failures:
                del failures[rid]
            else:
                failures[rid] = rng.choice(["timed out", "refused"])
        elif action == 6:
            wall += rng.choice([1.0, 10.0, 70.0])
            mono += rng.choice([1.0, 10.0])
        elif action == 7:
            rid = rng.choice(rids)
            obs.books[rid] = replace(obs.books.get(rid, ReplicaBook()),
                                     stop_deadline=mono + rng.choice([0.5, 5.0]))
            obs.touch(rid)
        else:
            rid = rng.choice(rids)
            obs.books[rid] = replace(obs.books.get(rid, ReplicaBook()),
                                     pending_user_config="1")
            obs.touch(rid)
        books_before = dict(obs.books)
        expected, expected_books = observe_all(records, reports.get, nodes, books_before,
                                               failures, wall_now=wall, mono_now=mono)
        due = len(obs._touched | obs._clock_due.keys())
        got = obs.update(records, reports.get, nodes, failures, wall_now=wall,
                         mono_now=mono, full=step % 50 == 0)
        assert got == expected, f"step {step}: action {action}"
        assert all(rid in obs.reviewed for rid in (previous.keys() | obs.views.keys())
                   if previous.get(rid) != obs.views.get(rid)), "a change not reviewed"
        # Every deployment a replica's view changed in (beyond its load), joined or left,
        # is named changed; the views grouped by deployment are the views.
        moved: set[tuple[str, str]] = set()
        for rid in previous.keys() | obs.views.keys():
            a, b = previous.get(rid), obs.views.get(rid)
            if a is None or b is None or differs_beyond_load(a, b):
                moved |= {(v.app, v.deployment) for v in (a, b) if v is not None}
        assert moved <= obs.take_changed(), f"step {step}: a deployment's change missed"
        grouped: dict[tuple[str, str], dict[str, ReplicaView]] = {}
        for v in got:
            grouped.setdefault((v.app, v.deployment), {})[v.replica_id] = v
        assert obs.by_deployment == grouped, f"step {step}"
        previous = dict(obs.views)
        assert obs.books == expected_books, f"step {step}: action {action}"
        reviewed_fewer += due < len(records)
    assert reviewed_fewer > 300  # it did view fewer than all most of the time


def test_a_change_nobody_announced_is_seen_at_the_next_full_update() -> None:
    rec = ReplicaRecord("app#D#1", "app", "D", "v1", pid=1, started_at=1000.0, node_id="n1")
    nodes = {"n1": node("n1", {"app#D#1": 1})}
    reports = {"app#D#1": SessionReport(connected=True, state="RUNNING", ongoing=1)}
    obs = Observations()

    def update(full: bool) -> int:
        [view] = obs.update({"app#D#1": rec}, reports.get, nodes, {}, wall_now=1001.0,
                            mono_now=5.0, full=full)
        return view.ongoing

    assert update(full=False) == 1
    assert update(full=False) == 1  # its book settled (it had not seen it RUNNING)
    reports["app#D#1"] = SessionReport(connected=True, state="RUNNING", ongoing=4)
    assert update(full=False) == 1  # not announced: not viewed again
    assert update(full=True) == 4


def test_the_sweep_sees_a_change_nobody_announced_within_its_time() -> None:
    # Ten replicas, a sweep of 4 s, an update every second: each update views again a
    # quarter of them in turn (plus what changed), and every unannounced change shows
    # within 4 s (and not at once).
    ids = [f"app#D#{i}" for i in range(10)]
    records = {rid: ReplicaRecord(rid, "app", "D", "v1", pid=1, started_at=1000.0,
                                  node_id="n1") for rid in ids}
    nodes = {"n1": node("n1", dict.fromkeys(ids, 1))}
    reports = {rid: SessionReport(connected=True, state="RUNNING", ongoing=1) for rid in ids}
    obs = Observations()
    mono = [5.0]

    def update() -> list[int]:
        mono[0] += 1.0
        views = obs.update(records, reports.get, nodes, {}, wall_now=1001.0,
                           mono_now=mono[0], full=False, sweep_s=4.0)
        return [v.ongoing for v in views]

    update()
    update()  # the books settle (they had not seen the replicas RUNNING)
    for rid in ids:
        reports[rid] = SessionReport(connected=True, state="RUNNING", ongoing=4)
    seen = []
    for _ in range(4):
        seen.append(update().count(4))
        assert len(obs.swept) <= 3
    assert seen[0] < 10 and seen[-1] == 10


def test_a_replica_waiting_on_the_clock_is_viewed_when_its_time_comes_and_not_before() -> None:
    rec = ReplicaRecord("app#D#1", "app", "D", "v1", pid=0, started_at=1000.0, node_id="n1")
    nodes = {"n1": node("n1", {"app#D#1": 1})}
    obs = Observations()
    wall, mono = 1000.0, 50.0

    def state() -> str:
        views = obs.update({rec.replica_id: rec}, lambda rid: None, nodes, {}, wall_now=wall,
                           mono_now=mono, full=False)
        return views[0].state

    assert state() == "PENDING"
    assert state() == "PENDING"  # viewed again once: its book changed (first seen)
    assert obs.update({rec.replica_id: rec}, lambda rid: None, nodes, {}, wall_now=wall + 10,
                      mono_now=mono + 10, full=False) and not obs.reviewed  # not due yet
    wall, mono = wall + REGISTER_TIMEOUT_S, mono + REGISTER_TIMEOUT_S
    assert state() == "PENDING"  # its time: viewed, not past it yet
    assert obs.reviewed == {rec.replica_id}
    wall, mono = wall + 0.001, mono + 0.001
    assert state() == "FAILED"


def test_clock_due_gives_the_times_still_to_come() -> None:
    rec = ReplicaRecord("app#D#1", "app", "D", "v1", pid=0, started_at=1000.0)
    book = ReplicaBook(first_seen=1010.0, stop_deadline=70.0)
    assert clock_due(rec, book, wall_now=1001.0, mono_now=60.0) == (
        1000.0 + AGENT_START_GRACE_S, 70.0)
    assert clock_due(rec, book, wall_now=1020.0, mono_now=71.0) == (
        1010.0 + REGISTER_TIMEOUT_S, None)
    assert clock_due(rec, book, wall_now=2000.0, mono_now=70.0) == (None, 70.0)
