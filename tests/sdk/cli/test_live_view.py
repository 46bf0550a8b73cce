"""What `weir deploy --wait` and `weir status --watch` draw, off a terminal (pure lines and
printed streams; no cluster)."""

from __future__ import annotations

import io

import yaml
from rich.console import Console

from weir.cli.deploy_wait import DeployProgress
from weir.cli.live_view import DeployView, progress_lines, watch

APPS = {"a": {"app_status": {"status": "DEPLOYING", "message": ""},
              "deployment_statuses": [
                  {"name": "D", "status": "UPDATING",
                   "replica_states": {"STARTING": 1, "RUNNING": 1}},
                  {"name": "E", "status": "UPDATING", "replica_states": {}}]}}


def test_progress_lines_show_each_deployments_replicas_by_state() -> None:
    assert progress_lines(APPS, ["a", "b"]) == [
        "a: DEPLOYING", "  D: UPDATING, 1 RUNNING, 1 STARTING", "  E: UPDATING, no replicas yet",
        "b: waiting for the controller to take the config"]


def test_a_failure_message_is_shown() -> None:
    failed = {"a": {"app_status": {"status": "DEPLOY_FAILED", "message": "boom"},
                    "deployment_statuses": []}}
    assert progress_lines(failed, ["a"]) == ["a: DEPLOY_FAILED (boom)"]


def test_off_a_terminal_the_deploy_view_prints_each_change_once() -> None:
    out = io.StringIO()
    with DeployView(["a"], Console(file=out, width=200)) as view:
        view(APPS, DeployProgress(False, waiting_for=("a",)))
        view(APPS, DeployProgress(False, waiting_for=("a",)))
        done = {"a": {"app_status": {"status": "RUNNING"}, "deployment_statuses": []}}
        view(done, DeployProgress(True))
    assert out.getvalue().count("a: DEPLOYING") == 1
    assert out.getvalue().endswith("a: RUNNING\n")


def test_off_a_terminal_watch_prints_a_yaml_stream() -> None:
    out = io.StringIO()
    drawn = iter(["n: 1\n", "n: 2\n", "n: 3\n"])
    rounds = []

    def stop_after_three(interval: float) -> bool:
        rounds.append(interval)
        return len(rounds) == 3

    watch(lambda: next(drawn), Console(file=out), 0.5, should_stop=stop_after_three)
    assert list(yaml.safe_load_all(out.getvalue())) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert rounds == [0.5, 0.5, 0.5]


def test_on_a_terminal_both_views_redraw_in_place() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    drawn = iter(["n: 1\n", "n: 2\n"])
    watch(lambda: next(drawn), console, 0.1, should_stop=lambda _: True)
    with DeployView(["a"], console) as view:
        view(APPS, DeployProgress(False, waiting_for=("a",)))
    text = out.getvalue()
    assert "n: 1" in text and "\x1b[" in text  # control codes: drawn in place
    assert text.rstrip().endswith("E: UPDATING, no replicas yet")  # the last picture stays
