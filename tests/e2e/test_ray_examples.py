"""Ray Serve's documentation examples, written as its docs write them (`from ray import
serve` read as `from weir import serve`), each run as a user would: `python example.py`
against a running cluster, which serve.run finds through WEIR_ADDRESS. Each script
asserts what Ray's docs say it prints and ends by printing "ok"."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT, RunningCluster

EXAMPLES = ROOT / "tests" / "e2e" / "apps" / "ray_examples"


@pytest.mark.parametrize("example", ["hello", "fastapi_composition", "batching", "streaming",
                                     "user_config", "request_ids", "key_concepts",
                                     "model_composition", "production_status", "multiplexing"])
def test_ray_example_runs_unchanged(cluster: RunningCluster, example: str) -> None:
    env = {**os.environ, "WEIR_ADDRESS": cluster.info.address,
           "WEIR_ETCD_ENDPOINTS": cluster.info.etcd_endpoints,
           "WEIR_TOKEN": cluster.info.token, "EXAMPLE_URL": cluster.url}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{example}.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)
    print(f"{example}: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
