"""The control-plane scale bench on a small fleet: every figure is there and sane.

A real etcd and two real controller processes, 50 simulated replicas in two simulation
processes and 3 route subscribers; the bench stops what it started, checked here by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from bench.control_plane_scale import APP_SIZE, app_config, first_arrival_ms, latency_ms, pass_times
from bench.sim_fleet import Probe
from weir.controller.pass_stats import PASS_STATS_S
from weir.processes import find_pids

ROOT = Path(__file__).resolve().parents[2]


def test_small_run_writes_every_figure(tmp_path: Path) -> None:
    out, work = tmp_path / "scale.json", tmp_path / "work"
    subprocess.run(
        [sys.executable, "-m", "bench.control_plane_scale", "--replicas", "50",
         "--proxies", "3", "--nodes", "2", "--sim-procs", "2", "--duration", "3",
         "--phase-timeout", "60",
         "--json", str(out), "--workdir", str(work)],
        cwd=ROOT, check=True, timeout=240, capture_output=True)
    figures = json.loads(out.read_text())
    assert figures["replicas"] == 50 and figures["proxies"] == 3
    assert figures["sim_procs"] == 2
    assert not figures.get("failures"), figures.get("failures")
    for key in ("route_push_p99_ms", "report_to_route_p99_ms"):
        # Each probe waits at most 10 s; a missed one would show as 10,000 ms.
        assert 0 < figures[key] < 5000, (key, figures[key])
    assert 0 < figures["leader_cpu_pct"] < 200
    assert 20 < figures["leader_rss_mb"] < 2000
    assert 0 <= figures["etcd_writes_per_s"] < 1000
    assert 0 < figures["deploy_s"] < 60
    assert 0 < figures["failover_s"] < 60
    assert figures["probes"] >= 3
    # Nothing left behind: no controller or etcd of this run still runs.
    assert not find_pids(lambda argv: str(work) in " ".join(argv))


def test_the_steady_states_slowest_pass_leaves_out_what_came_before() -> None:
    def at(second: float) -> str:
        return f"2026-11-30T17:00:{second:06.3f}Z"

    began = datetime_of(at(20.0))
    events = [
        {"event": "slow reconcile pass", "ms": 900.0, "timestamp": at(10.0)},  # the ramp
        {"event": "reconcile passes", "max_ms": 900.0, "timestamp": at(22.0)},  # covers it
        {"event": "slow reconcile pass", "ms": 250.0, "timestamp": at(25.0)},
        {"event": "reconcile passes", "max_ms": 250.0,
         "timestamp": at(20.0 + PASS_STATS_S + 1)},
    ]
    assert pass_times(events, began, began + 30) == (250.0, 1)
    assert pass_times(events[:2], began, began + 30) == (None, 0)


def datetime_of(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_health_check_period_is_set_on_every_deployment_when_given() -> None:
    apps = app_config(APP_SIZE + 1, health_check_period_s=1.0)
    assert [d["health_check_period_s"] for a in apps for d in a["deployments"]] == [1.0, 1.0]
    assert all("health_check_period_s" not in d
               for a in app_config(APP_SIZE + 1) for d in a["deployments"])


def test_a_push_is_timed_from_arrivals_since_the_change_across_two_terms() -> None:
    # A leader's table versions start again with its term: the first term's version 900
    # arrived long before the change, which the second term shows at version 40.
    probe = Probe(started=0.0, seen=lambda table: True, waiting=set(), started_wall=100.0,
                  version=40, last_wall=100.02)
    probe.done.set()
    arrivals = [([900, 12, 39, 40, 41], [20.0, 90.0, 99.0, 100.03, 100.2]),
                ([950, 41], [25.0, 100.05])]
    assert round(first_arrival_ms(probe, arrivals) or 0, 1) == 20.0  # the witness's
    assert round(latency_ms(probe, arrivals), 1) == 50.0
