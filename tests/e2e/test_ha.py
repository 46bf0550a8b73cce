"""Chaos tests: kill real processes of a real cluster under real load, lose nothing.

Each test starts its own cluster (it kills parts of it), runs HTTP load through the proxy
from a few client threads, does its damage and prints what it measured (run with -s to
see the figures; docs/ha.md quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.e2e.conftest import RunningCluster, start_cluster, wait_for
from weir.cli.admin_client import AdminClient
from weir.etcd.server import EtcdCluster
from weir.exceptions import ClusterError

APP = "ha"
IMPORT_PATH = "tests.e2e.apps.ha_app:app"


@dataclass
class Load:
    """Closed-loop HTTP load: `clients` threads, each sending one request after another."""

    url: str
    clients: int = 4
    sent: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        wait_for(lambda: self.sent >= 20, 20, "the load to get going")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _client(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            what = ""
            try:
                reply = session.get(self.url, timeout=10)
                if reply.status_code == 200:
                    pid = int(reply.json()["pid"])
                else:
                    what = f"HTTP {reply.status_code}: {reply.text[:100]}"
            except requests.RequestException as exc:
                what = repr(exc)
            with self._lock:
                self.sent += 1
                if what:
                    self.failures.append((time.monotonic(), what))
                else:
                    self.pids_seen.add(pid)

    def count(self) -> int:
        """Requests completed so far."""
        with self._lock:
            return self.sent

    def more(self, n: int = 50, timeout: float = 20) -> None:
        """Wait until `n` more requests have completed (the load is really flowing)."""
        target = self.count() + n
        wait_for(lambda: self.count() >= target, timeout, f"{n} more requests")


class StatusWatcher:
    """Records each change of the app's deployment (status, message), polled every 50 ms
    from a thread until the `with` block ends."""

    def __init__(self, client: AdminClient) -> None:
        self.client = client
        self.seen: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StatusWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for d in self.client.get_status(APP)["applications"][APP]["deployment_statuses"]:
                if not self.seen or self.seen[-1] != (d["status"], d["message"]):
                    self.seen.append((d["status"], d["message"]))
            time.sleep(0.05)


def replicas(client: AdminClient) -> dict[int, str]:
    """PID -> state of every replica of the app."""
    return {r["pid"]: r["state"] for r in client.list_replicas() if r.get("app") == APP}


def leader_of(client: AdminClient) -> dict[str, Any] | None:
    """The controller that reports itself leader, or None (no leader, or none reachable)."""
    try:
        status = client.get_status()
    except ClusterError:
        return None
    leaders = [c for c in status["controllers"] if c["role"] == "leader"]
    return leaders[0] if leaders else None


def adopted(client: AdminClient, before: dict[int, str]) -> bool:
    """Whether the leader has the same replica processes, in the same states, as `before`
    (printing what it has while it has not)."""
    now = replicas(client)
    if now != before:
        print(f"replicas now {now}, before {before}")
    return now == before


def take_over(rc: RunningCluster, t0: float, pids_before: dict[int, str],
              not_pid: int = 0) -> tuple[dict[str, Any], float, float]:
    """Wait for a leader (other than PID `not_pid`) and for it to adopt the same replica
    processes (not restarted ones); returns it and both delays counted from `t0`."""
    leader = wait_for(lambda: (lambda c: c if c and c["pid"] != not_pid else None)(
        leader_of(rc.client)), 15, "a new leader")
    leader_s = time.monotonic() - t0
    wait_for(lambda: adopted(rc.client, pids_before), 10, "the replicas adopted")
    return leader, leader_s, time.monotonic() - t0


def app_summary(client: AdminClient) -> dict[str, Any]:
    """What `weir status` says of the app, without counters that move."""
    doc = client.get_status(APP)["applications"][APP]
    return {"app_status": doc["app_status"],
            "deployments": [(d["name"], d["status"]) for d in doc["deployment_statuses"]]}


def deploy(rc: RunningCluster, num_replicas: int = 2) -> None:
    """Deploy the chaos app with `num_replicas` and wait until it runs them all."""
    rc.deploy_app(APP, IMPORT_PATH,
                  deployments=[{"name": "Steady", "num_replicas": num_replicas}])
    wait_for(lambda: list(replicas(rc.client).values()).count("RUNNING") == num_replicas,
             60, f"{num_replicas} replicas running")
    rc.wait_status(APP, "RUNNING")


def report(title: str, **figures: Any) -> None:
    """Print one test's figures on one line."""
    print(f"\n[chaos] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def two_controllers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A cluster with two controllers (one leads) and the chaos app on 2 replicas."""
    for rc in start_cluster(tmp_path_factory, controllers=2):
        deploy(rc)
        yield rc


@pytest.fixture
def one_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A cluster with one controller and the chaos app on 2 replicas."""
    for rc in start_cluster(tmp_path_factory):
        deploy(rc)
        yield rc


def test_sigkill_the_leader_under_load(two_controllers: RunningCluster) -> None:
    rc = two_controllers
    pids_before = replicas(rc.client)
    status_before, config_before = app_summary(rc.client), rc.client.get_config()
    old = wait_for(lambda: leader_of(rc.client), 10, "a leader")
    with Load(rc.url + f"/{APP}") as load:
        t0 = time.monotonic()
        rc.cluster.kill_controller(old["address"])
        new, failover_s, adopted_s = take_over(rc, t0, pids_before, not_pid=old["pid"])
        load.more(100)
    report("leader SIGKILL", new_leader_s=round(failover_s, 2),
           replicas_adopted_s=round(adopted_s, 2), requests=load.sent,
           failed=len(load.failures))
    assert not load.failures, load.failures[:5]
    assert failover_s <= 3.0, f"the new leader took {failover_s:.2f} s"
    assert new["address"] != old["address"]
    # What the user sees is unchanged.
    assert app_summary(rc.client) == status_before
    assert rc.client.get_config() == config_before
    # The new leader takes writes: scale 2 -> 3 keeps the two.
    deploy(rc, num_replicas=3)
    assert set(pids_before) < set(replicas(rc.client))


def test_sigkill_a_replica_under_load(one_controller: RunningCluster) -> None:
    rc = one_controller
    before = replicas(rc.client)
    victim = sorted(before)[0]
    with Load(rc.url + f"/{APP}") as load, StatusWatcher(rc.client) as watcher:
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = replicas(rc.client)
            return victim not in now and list(now.values()).count("RUNNING") == 2

        wait_for(replaced, 15, "the dead replica replaced")
        replaced_s = time.monotonic() - t0
        load.more(50)
        wait_for(lambda: watcher.seen and watcher.seen[-1][0] == "HEALTHY", 10,
                 "HEALTHY again")
    seen = watcher.seen
    report("replica SIGKILL", replaced_s=round(replaced_s, 2), requests=load.sent,
           failed=len(load.failures), statuses=[s for s, _ in seen])
    # Only what was in flight on the dead replica may fail: at most one per client.
    assert len(load.failures) <= load.clients, load.failures
    assert replaced_s <= 5.0
    assert any(s == "UNHEALTHY" and "died unexpectedly" in m for s, m in seen), seen
    assert {s for s, _ in seen} <= {"HEALTHY", "UNHEALTHY"}, seen  # a crash is no update
    survivor = next(p for p in before if p != victim)
    assert survivor in replicas(rc.client)


def test_frozen_replica_is_found_from_outside_and_replaced(
        one_controller: RunningCluster) -> None:
    """A SIGSTOPped replica keeps its session's TCP connection and reports nothing, so its
    health-check answers stop: only the leader, whose due answers do not come, finds it.
    It leaves routing and is replaced while the other replica serves."""
    rc = one_controller
    before = replicas(rc.client)
    victim = sorted(before)[0]
    try:
        with Load(rc.url + f"/{APP}") as load, StatusWatcher(rc.client) as watcher:
            t0 = time.monotonic()
            sent_at_freeze = load.count()
            os.kill(victim, signal.SIGSTOP)

            def replaced() -> bool:
                now = replicas(rc.client)
                return victim not in now and list(now.values()).count("RUNNING") == 2

            wait_for(replaced, 30, "the frozen replica replaced")
            replaced_s = time.monotonic() - t0
            served_meanwhile = load.count() - sent_at_freeze - len(load.failures)
            load.more(50)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    seen = watcher.seen
    report("replica SIGSTOP", replaced_s=round(replaced_s, 2), requests=load.sent,
           served_while_frozen=served_meanwhile, failed=len(load.failures))
    assert any(s == "UNHEALTHY" and "failed its health check" in m for s, m in seen), seen
    assert served_meanwhile >= 20, "the other replica kept serving"
    # Only calls routed to the frozen replica before it left routing may fail.
    assert len(load.failures) <= 2 * load.clients, load.failures
    assert next(p for p in before if p != victim) in replicas(rc.client)


def test_failing_check_health_is_replaced(one_controller: RunningCluster) -> None:
    rc = one_controller
    before = replicas(rc.client)
    sick = rc.get(f"/{APP}/sick").json()["pid"]
    messages: list[str] = []

    def unhealthy_with_reason() -> bool:
        for d in rc.app_status(APP)["deployment_statuses"]:
            if d["status"] == "UNHEALTHY":
                messages.append(d["message"])
        return any("failed its health check" in m for m in messages)

    # UNHEALTHY at once ("1 of 2 replicas running"), with the check's reason once the
    # leader has read the replica's report.
    wait_for(unhealthy_with_reason, 15, "the deployment UNHEALTHY with the reason")
    assert any("told to be sick" in m for m in messages), messages
    wait_for(lambda: sick not in replicas(rc.client)
             and list(replicas(rc.client).values()).count("RUNNING") == 2,
             20, "the sick replica replaced")
    status = rc.wait_status(APP, "RUNNING")
    assert status["deployment_statuses"][0]["status"] == "HEALTHY"
    assert set(before) - {sick} <= set(replicas(rc.client))


def test_a_check_health_that_hangs_is_replaced(one_controller: RunningCluster) -> None:
    """A check_health() that never returns, in a replica whose loop and session stay alive
    (its reports keep coming): the replica's own health_check_timeout_s (2 s) fails it."""
    rc = one_controller
    before = replicas(rc.client)
    t0 = time.monotonic()
    hung = rc.get(f"/{APP}/hang").json()["pid"]
    messages: list[str] = []

    def replaced() -> bool:
        messages.extend(d["message"] for d in rc.app_status(APP)["deployment_statuses"]
                        if d["status"] == "UNHEALTHY")
        now = replicas(rc.client)
        return hung not in now and list(now.values()).count("RUNNING") == 2

    wait_for(replaced, 30, "the replica whose check hangs replaced")
    report("check_health hangs", replaced_s=round(time.monotonic() - t0, 2))
    assert any("check_health() gave no answer within health_check_timeout_s=2" in m
               for m in messages), messages
    assert set(before) - {hung} <= set(replicas(rc.client))


def test_scale_down_drains_in_flight_requests(one_controller: RunningCluster) -> None:
    rc = one_controller
    results: list[int] = []

    def slow() -> None:
        results.append(rc.get(f"/{APP}?s=1.5", timeout=30).status_code)

    threads = [threading.Thread(target=slow) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_for(lambda: _ongoing(rc) >= 6, 10, "6 requests running")
    rc.deploy_app(APP, IMPORT_PATH, deployments=[{"name": "Steady", "num_replicas": 1}])
    for thread in threads:
        thread.join(30)
    assert results == [200] * 6
    wait_for(lambda: len(replicas(rc.client)) == 1, 20, "one replica left")


def _ongoing(rc: RunningCluster) -> int:
    return sum(int(r.get("ongoing", 0)) for r in rc.client.list_replicas())


def test_proxy_restart_rebuilds_its_table(one_controller: RunningCluster) -> None:
    rc = one_controller
    rc.cluster.kill_proxy()
    firsts: dict[str, float] = {}
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(rc.url + "/-/routes", timeout=1) as reply:
                    firsts.setdefault("listening", time.monotonic())
                    if f"/{APP}" in json.loads(reply.read()):
                        firsts.setdefault("table", time.monotonic())
                        return
            except OSError:
                pass
            time.sleep(0.005)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t0 = time.monotonic()
    rc.cluster.start_proxy()
    prober.join(10)
    done.set()
    assert rc.get(f"/{APP}").status_code == 200
    table_s = firsts["table"] - firsts["listening"]
    report("proxy restart", process_start_to_table_s=round(firsts["table"] - t0, 2),
           listening_to_table_s=round(table_s, 3))
    assert table_s < 1.0


def test_whole_control_plane_restart(two_controllers: RunningCluster) -> None:
    rc = two_controllers
    pids_before = replicas(rc.client)
    config_before = rc.client.get_config()
    with Load(rc.url + f"/{APP}") as load:
        for address in list(rc.info.controllers):
            rc.cluster.kill_controller(address)
        load.more(100)  # serving on, with no controller at all
        t0 = time.monotonic()
        rc.cluster.start_controller()
        rc.cluster.start_controller()
        _, leader_s, adopted_s = take_over(rc, t0, pids_before)
        load.more(100)
    report("control plane restart", leader_after_start_s=round(leader_s, 2),
           adopted_after_start_s=round(adopted_s, 2), requests=load.sent,
           failed=len(load.failures))
    assert not load.failures, load.failures[:5]
    assert rc.client.get_config() == config_before
    rc.wait_status(APP, "RUNNING")
    deploy(rc, num_replicas=3)
    assert set(pids_before) < set(replicas(rc.client))


# ------------------------------------------------------------------ etcd


@pytest.fixture
def on_three_etcds(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[RunningCluster, EtcdCluster]]:
    """Two controllers and a proxy on a 3-member etcd cluster, the chaos app deployed."""
    etcd = EtcdCluster(3)
    etcd.start()
    try:
        for rc in start_cluster(tmp_path_factory, controllers=2,
                                etcd=",".join(etcd.endpoints)):
            deploy(rc)
            yield rc, etcd
    finally:
        etcd.stop()


def etcd_leader(etcd: EtcdCluster) -> int:
    """Index of the member that leads the etcd cluster now."""
    for i, member in enumerate(etcd.members):
        request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status",
                                         data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=1) as reply:
                doc = json.loads(reply.read())
        except OSError:
            continue
        if doc["leader"] == doc["header"]["member_id"]:
            return i
    raise AssertionError("no etcd member leads")


@dataclass
class AdminLoad:
    """Admin calls one after another: a read (config), a read via the leader (status) and
    a write (a partial deploy that changes nothing), counting each failure."""

    rc: RunningCluster
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> AdminLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        client = self.rc.client
        config = client.get_config(APP)
        while not self._stop.is_set():
            for call in (lambda: client.get_config(),
                         lambda: client.get_status(APP),
                         lambda: client.deploy({"applications": [config]}, partial=True)):
                try:
                    call()
                except ClusterError as exc:
                    self.failures.append(str(exc))
                self.calls += 1


def test_one_etcd_member_down(on_three_etcds: tuple[RunningCluster, EtcdCluster]) -> None:
    rc, etcd = on_three_etcds
    pids_before = replicas(rc.client)
    with Load(rc.url + f"/{APP}") as load, AdminLoad(rc) as admin:
        wait_for(lambda: admin.calls >= 6, 20, "admin calls flowing")
        victim = etcd.members[etcd_leader(etcd)]
        victim.kill()
        calls_at_kill = admin.calls
        wait_for(lambda: admin.calls >= calls_at_kill + 30, 30, "30 more admin calls")
        load.more(100)
    report("etcd leader member SIGKILL", admin_calls=admin.calls,
           admin_failed=len(admin.failures), requests=load.sent, failed=len(load.failures))
    assert not load.failures, load.failures[:5]
    assert not admin.failures, admin.failures[:5]
    # No replica restarted: the same PIDs, RUNNING again once their sessions (which a
    # controller failover during the etcd election may have ended) are back.
    wait_for(lambda: replicas(rc.client) == pids_before, 15, "the same replicas RUNNING")


def test_all_of_etcd_down_for_10_s(on_three_etcds: tuple[RunningCluster, EtcdCluster]) -> None:
    rc, etcd = on_three_etcds
    pids_before = replicas(rc.client)
    config_before = rc.client.get_config()
    with Load(rc.url + f"/{APP}") as load:
        for member in etcd.members:
            member.kill()
        down_at = time.monotonic()
        # Writes fail at once, naming etcd, whether a leader still holds on or not.
        errors = []
        while time.monotonic() - down_at < 10:
            t = time.monotonic()
            with pytest.raises(ClusterError) as info:
                rc.client.deploy({"applications": [config_before["applications"][0]]},
                                 partial=True)
            errors.append((round(time.monotonic() - t, 2), str(info.value)))
            load.more(20)
        served_while_down = load.count()
        etcd.start()  # every member again, same ports and data (quorum needs them together)
        back_at = time.monotonic()
        wait_for(lambda: leader_of(rc.client), 30, "a leader once etcd is back")
        recovered_s = time.monotonic() - back_at
        load.more(100)
    report("all of etcd down 10 s", requests=load.sent, failed=len(load.failures),
           served_while_down=served_while_down, write_errors=len(errors),
           slowest_write_error_s=max(t for t, _ in errors), leader_after_etcd_back_s=round(
               recovered_s, 2), first_error=errors[0][1][:120], last_error=errors[-1][1][:120])
    assert not load.failures, load.failures[:5]
    assert all("etcd" in message for _, message in errors), errors
    assert max(t for t, _ in errors) < 3.0
    wait_for(lambda: adopted(rc.client, pids_before), 10, "the replicas adopted")
    assert rc.client.get_config() == config_before
    deploy(rc, num_replicas=3)
    assert set(pids_before) < set(replicas(rc.client))
