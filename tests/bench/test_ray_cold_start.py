"""Ray Serve's side of the cold-start bench, its pure parts: naming each process of a Ray
run, summing memory by kind, and the tables beside Weir's (no Ray is run here)."""

import pytest

from bench.ray_cold_start import (
    RayRun,
    comparison_table,
    memory_by_kind,
    ray_breakdown,
    ray_process_kind,
)

PY = "/work/venv-ray/bin/python"
RAY = "/work/venv-ray/lib/python3.11/site-packages/ray"


@pytest.mark.parametrize(("cmdline", "kind"), [
    ([PY, "/work/venv-ray/bin/serve", "run", "--address", "local", "c.yaml"], "serve run"),
    ([f"{RAY}/core/src/ray/gcs/gcs_server", "--log_dir=/tmp/x"], "gcs_server"),
    ([f"{RAY}/core/src/ray/raylet/raylet", "--raylet_socket_name=/tmp/s"], "raylet"),
    ([PY, "-u", f"{RAY}/dashboard/dashboard.py", "--host=127.0.0.1"], "dashboard"),
    ([PY, "-u", f"{RAY}/_private/log_monitor.py", "--session-dir=/x"], "log_monitor"),
    ([PY, "-B", "-c", "from multiprocessing.forkserver import main; main(25)"],
     "multiprocessing.forkserver"),
    (["ray::ServeReplica:default:Noop"], "ray::ServeReplica"),
    (["ray::ServeController.listen_for_change"], "ray::ServeController"),
    (["ray::ProxyActor"], "ray::ProxyActor"),
    ([], "other"),
])
def test_ray_process_kind(cmdline: list[str], kind: str) -> None:
    assert ray_process_kind(cmdline) == kind


def test_memory_is_summed_by_kind() -> None:
    cmdlines = {1: ["ray::ServeReplica:a:A"], 2: ["ray::ServeReplica:b:B"],
                3: [f"{RAY}/core/src/ray/raylet/raylet"], 4: []}
    rss = {1: 100.0, 2: 120.0, 3: 30.0, 4: 0.0}
    assert memory_by_kind([1, 2, 3, 4], cmdlines.__getitem__, rss.__getitem__) == {
        "ray::ServeReplica": 220.0, "raylet": 30.0, "other": 0.0}


RAY_RUNS = [RayRun(40.0, {"raylet": 30.0, "ray::ServeReplica": 1170.0}, 13),
            RayRun(50.0, {"raylet": 32.0, "ray::ServeReplica": 1268.0}, 14),
            RayRun(45.0, {"raylet": 31.0, "ray::ServeReplica": 1269.0}, 13)]


def test_comparison_puts_weir_and_ray_serve_in_one_table() -> None:
    weir = [(3.0, 180.0), (2.0, 170.0), (4.0, 190.0)]
    lines = comparison_table(weir, RAY_RUNS).splitlines()
    assert lines[1].split() == ["Weir", "(weir", "run)", "3", "3.00", "2.00", "4.00", "180.0"]
    assert lines[2].split() == ["Ray", "Serve", "(serve", "run)", "3", "45.00", "40.00",
                                "50.00", "1300.0"]
    assert lines[3] == "Ray Serve / Weir resident memory: x7.2"
    assert len(comparison_table(weir, []).splitlines()) == 2  # no Ray row, no ratio


def test_ray_breakdown_lists_kinds_largest_first_with_the_total() -> None:
    lines = ray_breakdown(RAY_RUNS).splitlines()
    assert lines[1].split() == ["ray::ServeReplica", "1268.0"]
    assert lines[2].split() == ["raylet", "31.0"]
    assert lines[3].split() == ["total", "(13", "processes)", "1300.0"]
