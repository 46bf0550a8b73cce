"""The HTTP throughput bench's pure parts: system selection, ratios, the table, and how it
finds and configures Ray Serve (no Ray is run here)."""

from pathlib import Path

import pytest

from bench.http_throughput import (
    SystemResult,
    all_ratios,
    format_table,
    keep_best,
    ratio_lines,
    ratios,
    selected_systems,
)
from bench.load_client import Measurement
from bench.ray_serve import (
    RAY_PYTHON_ENV,
    RayUnavailable,
    choose_ray_python,
    probe_ray_python,
    serve_command,
    serve_config,
)


def point(rps: float, concurrency: int = 64, errors: int = 0) -> Measurement:
    return Measurement("wrk", concurrency, 5.0, int(rps * 5), errors, rps, 1.0, 2.0)


def result(name: str, **rps_by_c: float) -> SystemResult:
    out = SystemResult(name)
    for key, rps in rps_by_c.items():
        c = int(key.removeprefix("c"))
        out.points[c] = point(rps, c)
    return out


RESULTS = [result("bare-hop", c1=1000, c64=2000), result("weir-hypercorn", c1=600, c64=1000),
           result("weir-uvicorn", c1=800, c64=1500), result("weir-composed", c1=500, c64=1200),
           result("ray-serve", c1=100, c64=150)]


def test_groups_expand_in_system_order() -> None:
    assert selected_systems("ray") == ["ray-serve"]
    assert selected_systems("weir") == ["weir-hypercorn", "weir-uvicorn", "weir-composed"]
    assert selected_systems("ray,bare-hop") == ["bare-hop", "ray-serve"]
    assert selected_systems("all")[-2:] == ["weir-composed", "ray-serve"]
    with pytest.raises(SystemExit, match="unknown system 'ray-serv'"):
        selected_systems("ray-serv")


def test_ratios_default_to_weir_systems_over_the_bare_hop() -> None:
    by_system = ratios(RESULTS, [1, 64])
    assert by_system["weir-uvicorn"] == {"1": 0.8, "64": 0.75}
    assert set(by_system) == {"weir-hypercorn", "weir-uvicorn", "weir-composed"}


def test_ratios_over_ray_serve_and_composed_over_its_single_deployment() -> None:
    by_baseline = all_ratios(RESULTS, [1, 64], composed_server="uvicorn")
    assert by_baseline["ray-serve"]["weir-uvicorn"] == {"1": 8.0, "64": 10.0}
    assert "ray-serve" not in by_baseline["ray-serve"]
    assert by_baseline["weir-uvicorn"] == {"weir-composed": {"1": 0.625, "64": 0.8}}
    assert all_ratios(RESULTS, [64], "hypercorn")["weir-hypercorn"] == {
        "weir-composed": {"64": 1.2}}


def test_ratios_skip_missing_points_zero_baselines_and_absent_baselines() -> None:
    partial = [result("ray-serve", c1=0, c64=100), result("weir-uvicorn", c1=50),
               result("weir-hypercorn", c64=300)]
    assert ratios(partial, [1, 64], "ray-serve") == {"weir-hypercorn": {"64": 3.0}}
    assert ratios(partial, [1, 64]) == {}  # no bare-hop in this run


def test_ratio_lines_give_fractions_or_multiples() -> None:
    by_system = {"weir-uvicorn": {"1": 0.8, "64": 0.75}}
    assert ratio_lines("bare-hop", by_system) == [
        "weir-uvicorn / bare-hop req/s: c=1 0.80, c=64 0.75"]
    assert ratio_lines("ray-serve", {"weir-uvicorn": {"64": 9.96}}, multiple=True) == [
        "weir-uvicorn / ray-serve req/s: c=64 x10.0"]


def test_table_has_rows_ratios_and_says_why_a_system_was_skipped() -> None:
    skipped = SystemResult("ray-serve", skipped="no --ray-python given")
    failed = SystemResult("weir-composed", error="CliFailed: `weir deploy` exited\n...\nboom")
    rows = [*RESULTS[:3], failed, skipped]
    by_baseline = all_ratios(rows, [1, 64], "uvicorn")
    text = format_table(rows, [1, 64], by_baseline.pop("bare-hop"), by_baseline)
    lines = text.splitlines()
    assert lines[0].split() == ["system", "c=1", "req/s", "p50", "ms", "p99", "ms",
                                "c=64", "req/s", "p50", "ms", "p99", "ms"]
    assert lines[2].split()[:2] == ["bare-hop", "1,000"]
    assert "weir-hypercorn / bare-hop req/s: c=1 0.60, c=64 0.50" in lines
    assert "ray-serve: skipped: no --ray-python given" in lines
    assert "weir-composed: not measured: CliFailed: `weir deploy` exited ... boom" in lines
    assert not any("/ ray-serve" in line for line in lines)  # nothing to divide by
    # Callers that pass only the bare-hop ratios (bench/composition.py) still work.
    assert format_table(RESULTS[:2], [1], {}).count("\n") == 3


def test_ray_python_comes_from_the_flag_then_the_environment() -> None:
    env = {RAY_PYTHON_ENV: "/venv-ray/bin/python"}
    assert choose_ray_python("/other/python", env) == "/other/python"
    assert choose_ray_python(None, env) == "/venv-ray/bin/python"
    with pytest.raises(RayUnavailable, match=f"{RAY_PYTHON_ENV} is not set.*README"):
        choose_ray_python(None, {RAY_PYTHON_ENV: " "})


def test_probe_says_why_a_ray_python_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(RayUnavailable, match="no such file"):
        probe_ray_python(str(tmp_path / "python"))
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named ray' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RayUnavailable, match=r"cannot import ray\.serve: ModuleNotFound"):
        probe_ray_python(str(fake))


def test_serve_config_and_command(tmp_path: Path) -> None:
    config = serve_config(8123)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8123}
    assert config["applications"] == [{"name": "default", "route_prefix": "/",
                                       "import_path": "bench.ray_noop_app:app"}]
    python = tmp_path / "bin" / "python"
    conf = tmp_path / "c.yaml"
    assert serve_command(str(python), conf) == [
        str(python), "-m", "ray.serve.scripts", "run", "--address", "local", str(conf)]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "serve").write_text("")
    assert serve_command(str(python), conf)[:3] == [str(python), str(tmp_path / "bin/serve"),
                                                     "run"]


def test_rounds_keep_each_points_best_and_any_error() -> None:
    first = result("weir-uvicorn", c1=300, c64=900)
    first.ready_s = 3.0
    second = result("weir-uvicorn", c1=400, c64=800)
    second.ready_s = 2.0
    merged = keep_best(first, second)
    assert {c: p.rps for c, p in merged.points.items()} == {1: 400, 64: 900}
    assert merged.ready_s == 3.0 and merged.error is None
    failed = SystemResult("weir-uvicorn", error="ProcessFailed: did not answer")
    after_failure = keep_best(merged, failed)
    assert after_failure.error == "ProcessFailed: did not answer"
    assert after_failure.points == merged.points
    assert keep_best(None, second) is second
