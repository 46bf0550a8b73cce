"""A process started ahead: it takes on its assignment as a cold start would have had it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weir.warm_process import Assignment, _python_path, run_assigned, start_warm, starts_alike

APP = '''
import os
from weir import serve

# Read at import: the environment must be the assignment's before user code runs.
@serve.deployment(name=os.environ["WARM_TEST_NAME"])
class Echo:
    def __call__(self, request):
        return "hi"

app = Echo.bind()
'''


def test_assignment_round_trips_as_one_line() -> None:
    assignment = Assignment(["--a", "b c"], "/tmp", {"X": "1"})
    line = assignment.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert Assignment.from_line(line) == assignment


def test_an_assignment_with_a_log_file_round_trips() -> None:
    assignment = Assignment(["--a"], None, {}, "/tmp/x.log")
    assert Assignment.from_line(assignment.to_line()) == assignment


def test_a_warm_child_fits_unless_a_variable_read_at_start_differs() -> None:
    base = {"PATH": "/bin", "PYTHONHASHSEED": "0", "LD_PRELOAD": ""}
    assert starts_alike(base, {**base, "APP_SETTING": "1", "PYTHONPATH": "/code"})
    assert not starts_alike(base, {**base, "PYTHONHASHSEED": "7"})
    assert not starts_alike(base, {**base, "PYTHONWARNINGS": "error"})
    assert not starts_alike(base, {**base, "MALLOC_ARENA_MAX": "2"})
    assert not starts_alike(base, {k: v for k, v in base.items() if k != "LD_PRELOAD"})


def test_a_line_that_is_not_an_assignment_is_refused() -> None:
    with pytest.raises(ValueError, match="not an assignment"):
        Assignment.from_line(b'{"cwd": "/tmp"}')


def test_python_path_entries_as_the_interpreter_makes_them() -> None:
    assert _python_path("/a:rel::/b/../c", "/work") == ["/a", "/work/rel", "/work", "/c"]
    assert _python_path("", "/work") == []
    assert _python_path(None, "/work") == []


def build_output(out: bytes) -> dict:
    data = json.loads(out)
    assert "deployments" in data, data
    return data


def test_a_warm_build_child_builds_with_the_assigned_cwd_env_and_path(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "warm_test_app.py").write_text(APP)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "WARM_TEST_NAME": "FromEnv",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(code),
                                                       os.environ.get("PYTHONPATH")]))}
    args = ["--import-path", "warm_test_app:app", "--app-name", "a", "--args-json", "{}"]
    # Started where the parent runs, without the variable or the code on its path.
    proc = start_warm(sys.executable, "weir.build")
    code_, out, err = run_assigned(proc, Assignment(args, str(work), env), timeout=60)
    assert code_ == 0, err.decode()
    warm = build_output(out)
    cold = subprocess.run([sys.executable, "-m", "weir.build", *args], cwd=work, env=env,
                          capture_output=True, timeout=60, check=True)
    assert [d["name"] for d in warm["deployments"]] == ["FromEnv"]
    assert ([d["name"] for d in build_output(cold.stdout)["deployments"]]
            == [d["name"] for d in warm["deployments"]])


def test_a_warm_child_let_go_without_an_assignment_exits() -> None:
    proc = start_warm(sys.executable, "weir.build")
    out, err = proc.communicate(timeout=60)  # closes its stdin
    assert proc.returncode == 0, err.decode()
    assert out == b""
