"""The decision of when a deploy serves (weir.cli.deploy_wait), over plain status data."""

from __future__ import annotations

from typing import Any

from weir.cli.deploy_wait import DeployMark, changed_count, deploy_progress


def apps(**states: tuple[str, float]) -> dict[str, Any]:
    return {name: {"app_status": {"status": s, "message": "boom" if s == "DEPLOY_FAILED"
                                  else "", "deployment_timestamp": ts}}
            for name, (s, ts) in states.items()}


def test_the_last_deploys_running_status_does_not_count() -> None:
    # Redeployed within a second of the last deploy: the old version is still RUNNING.
    mark = DeployMark({"a": 100.0}, changed=1)
    assert not deploy_progress(apps(a=("RUNNING", 100.0)), ["a"], mark).done
    assert not deploy_progress(apps(a=("DEPLOYING", 100.5)), ["a"], mark).done
    assert deploy_progress(apps(a=("RUNNING", 100.5)), ["a"], mark).done


def test_a_new_app_counts_once_it_appears_and_runs() -> None:
    mark = DeployMark({}, changed=1)
    assert not deploy_progress({}, ["a"], mark).done
    assert deploy_progress(apps(a=("RUNNING", 5.0)), ["a"], mark).done


def test_an_unchanged_app_counts_once_every_changed_app_moved() -> None:
    mark = DeployMark({"a": 1.0, "b": 2.0}, changed=1)
    # Until b shows its new timestamp, a (unchanged, its old timestamp) might be the one
    # still to move.
    progress = deploy_progress(apps(a=("RUNNING", 1.0), b=("RUNNING", 2.0)), ["a", "b"], mark)
    assert not progress.done and set(progress.waiting_for) == {"a", "b"}
    assert deploy_progress(apps(a=("RUNNING", 1.0), b=("RUNNING", 3.0)), ["a", "b"],
                           mark).done
    # Nothing changed at all: the running apps count as they are.
    assert deploy_progress(apps(a=("RUNNING", 1.0)), ["a"], DeployMark({"a": 1.0}, 0)).done


def test_unknown_change_count_waits_for_a_new_timestamp() -> None:
    mark = DeployMark({"a": 1.0}, changed=None)
    assert not deploy_progress(apps(a=("RUNNING", 1.0)), ["a"], mark).done
    assert deploy_progress(apps(a=("RUNNING", 1.5)), ["a"], mark).done


def test_a_failed_deploy_is_reported_only_for_this_deploy() -> None:
    mark = DeployMark({"a": 1.0}, changed=1)
    assert deploy_progress(apps(a=("DEPLOY_FAILED", 1.0)), ["a"], mark).failed == ""
    failed = deploy_progress(apps(a=("DEPLOY_FAILED", 2.0)), ["a"], mark).failed
    assert "'a'" in failed and "boom" in failed


def test_changed_count_reads_the_deploy_reply() -> None:
    assert changed_count("deployed: 2 app(s) changed, 0 removed") == 2
    assert changed_count("something else") is None
