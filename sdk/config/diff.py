"""What deploying a config over another changes: the data of `weir deploy --dry-run`.

A pure function over two validated configs. A deployment entry holds only the fields the
user set, so a field missing on one side is reported as such (the deployment then keeps its
decorator's value) rather than as a change to the default. Each change is classed by what
deploying it will do: keep the replicas (lightweight), replace them one by one (roll), or
import the code again and roll every deployment (redeploy).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from weir.config.deployment_options import restarts_replicas
from weir.config.schema import ServeApplicationSchema, ServeDeploySchema

__all__ = ["BUILD_FIELDS", "diff_applications"]

#: Application fields that are the inputs of building it: a change re-imports the code and
#: rolls every deployment of the app.
BUILD_FIELDS = frozenset({"import_path", "args", "runtime_env"})


def _same(a: Any, b: Any) -> bool:
    # JSON text, not ==: True == 1 and 1 == 1.0 in Python, not in a config.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """{field: {"old": ..., "new": ...}} for each differing field; a side that did not
    set the field has no key."""
    out: dict[str, Any] = {}
    for key in [*new, *(k for k in old if k not in new)]:
        if key in old and key in new and _same(old[key], new[key]):
            continue
        out[key] = {**({"old": old[key]} if key in old else {}),
                    **({"new": new[key]} if key in new else {})}
    return out


def _diff_app(old: ServeApplicationSchema, new: ServeApplicationSchema) -> dict[str, Any] | None:
    fields = _changed_fields(old.model_dump(mode="json", exclude={"deployments"}),
                             new.model_dump(mode="json", exclude={"deployments"}))
    before = {d.name: d.model_dump(mode="json", exclude={"name"}) for d in old.deployments}
    after = {d.name: d.model_dump(mode="json", exclude={"name"}) for d in new.deployments}
    deployments: dict[str, Any] = {}
    for name in [*after, *(n for n in before if n not in after)]:
        changed = _changed_fields(before.get(name, {}), after.get(name, {}))
        if changed:
            light = not any(restarts_replicas(k) for k in changed)
            deployments[name] = {"update": "lightweight" if light else "roll",
                                 "fields": changed}
    if not fields and not deployments:
        return None
    if BUILD_FIELDS & set(fields):
        update = "redeploy"
    elif any(d["update"] == "roll" for d in deployments.values()):
        update = "roll"
    else:
        update = "lightweight"
    return {"update": update, "fields": fields, "deployments": deployments}


def diff_applications(old: ServeDeploySchema | None, new: ServeDeploySchema) -> dict[str, Any]:
    """What deploying `new` over `old` changes, as JSON-ready data (`weir deploy --dry-run`).

    Keys: "added", "removed", "unchanged" (application names); "changed": per app, its
    "update" — "lightweight" (no replica restarts: only num_replicas, user_config or
    autoscaling_config of deployments, or route_prefix and other app settings), "roll"
    (some deployment's other options changed: its replicas are replaced one by one) or
    "redeploy" (import_path, args or runtime_env changed: the code is imported again and
    every deployment rolls) — the app "fields" that changed, and per changed deployment
    override its "update" and "fields"; "options": changed cluster-wide fields
    ("http_options.port", ...). Each changed field is {"old": ..., "new": ...}, a side
    missing when the config did not set it (a deployment then keeps its decorator's value).
    """
    old_apps = {a.name: a for a in old.applications} if old else {}
    new_apps = {a.name: a for a in new.applications}
    changed: dict[str, Any] = {}
    unchanged: list[str] = []
    for name, app in new_apps.items():
        if name in old_apps:
            change = _diff_app(old_apps[name], app)
            if change is None:
                unchanged.append(name)
            else:
                changed[name] = change
    options: dict[str, Any] = {}
    if old is not None:
        before = old.model_dump(mode="json", exclude={"applications"})
        after = new.model_dump(mode="json", exclude={"applications"})
        for key in after:
            if isinstance(after[key], dict) and key.endswith("_options"):
                for sub, change in _changed_fields(before[key], after[key]).items():
                    options[f"{key}.{sub}"] = change
            elif not _same(before[key], after[key]):
                options[key] = {"old": before[key], "new": after[key]}
    return {
        "added": [n for n in new_apps if n not in old_apps],
        "removed": [n for n in old_apps if n not in new_apps],
        "unchanged": unchanged,
        "changed": changed,
        "options": options,
    }
