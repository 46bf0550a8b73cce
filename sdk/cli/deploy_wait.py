"""Waiting for a deploy to serve: what `serve.run`, `weir run` and `weir deploy --wait` do
after sending a config.

The status an application shows right after a deploy may still be the last deploy's: the
leader has not taken the new goal in yet, and its old version is RUNNING. Telling the two
apart by the caller's clock (`deployment_timestamp >= now - 1`) let a second deploy within a
second return at once while the old code still answered. Instead each app's
`deployment_timestamp` is read before the deploy: an app the deploy changed gets a new,
larger one (the leader stamps every changed app), so its status counts once the timestamp
moved. An app the deploy left unchanged keeps its timestamp; the reply says how many apps
changed, so once that many show a new timestamp the others are known to be unchanged and
their current status counts as it is.

`deploy_progress` is the decision, a pure function over status documents; `wait_for_deploy`
polls the admin API until it says done.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from weir.exceptions import RayServeException

DEPLOY_WAIT_S = 120.0
POLL_S = 0.05
_CHANGED = re.compile(r"deployed: (\d+) app\(s\) changed")


class StatusSource(Protocol):
    """What the wait needs of an admin client."""

    def get_status(self, name: str = "") -> dict[str, Any]:
        """The status document (`applications`, ...)."""
        ...


@dataclass(frozen=True)
class DeployMark:
    """What tells a deploy's own status from the last one's.

    `before`: each application's deployment_timestamp before the deploy (absent: it did not
    exist). `changed`: how many applications the deploy changed, from the reply (None if
    the reply did not say: then every app must show a new timestamp).
    """

    before: Mapping[str, float]
    changed: int | None = None


def timestamps(applications: Mapping[str, Any]) -> dict[str, float]:
    """Each application's deployment_timestamp in a status document's `applications`."""
    return {name: float(app.get("app_status", {}).get("deployment_timestamp", 0.0))
            for name, app in applications.items()}


def changed_count(reply_message: str) -> int | None:
    """How many applications a deploy changed, from its reply's message (None: unknown)."""
    found = _CHANGED.search(reply_message)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class DeployProgress:
    """Where a deploy stands: `done` once every app waited on runs its deployed version;
    `failed` names an app whose deploy failed, with the reason."""

    done: bool
    failed: str = ""
    waiting_for: tuple[str, ...] = ()


def deploy_progress(applications: Mapping[str, Any], names: Sequence[str],
                    mark: DeployMark) -> DeployProgress:
    """Whether the apps `names` run what the deploy marked by `mark` sent. Pure."""
    now = timestamps(applications)
    moved = {n for n, ts in now.items() if ts > mark.before.get(n, float("-inf"))}
    all_changed_seen = mark.changed is not None and len(moved) >= mark.changed
    waiting = []
    for name in names:
        app = applications.get(name)
        if app is None or not (name in moved or (all_changed_seen and name in mark.before)):
            waiting.append(name)
            continue
        status = app.get("app_status", {})
        if status.get("status") == "DEPLOY_FAILED":
            return DeployProgress(False, f"application {name!r} failed to deploy: "
                                         f"{status.get('message')}")
        if status.get("status") != "RUNNING":
            waiting.append(name)
    return DeployProgress(not waiting, waiting_for=tuple(waiting))


def mark_before(client: StatusSource) -> dict[str, float]:
    """Every application's deployment_timestamp now, to pass to `DeployMark`."""
    return timestamps(client.get_status().get("applications", {}))


#: Told each status polled, and where the deploy stands then (`weir deploy --wait`'s view).
ProgressHook = Callable[[Mapping[str, Any], DeployProgress], None]


def wait_for_deploy(client: StatusSource, names: Sequence[str], mark: DeployMark,
                    timeout: float = DEPLOY_WAIT_S,
                    on_progress: ProgressHook | None = None) -> dict[str, Any]:
    """Poll until every app in `names` runs the deploy's version; returns the status
    document's `applications`. Raises RayServeException if one failed to deploy (with the
    reason) or after `timeout` seconds (with the last status)."""
    deadline = time.monotonic() + timeout
    apps: dict[str, Any] = {}
    while True:
        apps = client.get_status().get("applications", {})
        progress = deploy_progress(apps, names, mark)
        if on_progress is not None:
            on_progress(apps, progress)
        if progress.failed:
            raise RayServeException(progress.failed)
        if progress.done:
            return apps
        if time.monotonic() >= deadline:
            last = {n: apps.get(n, {}).get("app_status") for n in progress.waiting_for}
            raise RayServeException(
                f"application(s) {', '.join(map(repr, progress.waiting_for))} did not "
                f"become RUNNING within {timeout:.0f} s; last status: {last}")
        time.sleep(POLL_S)
