"""The goal state as it lives in etcd, and the pure rules that turn a deploy into it.

The key layout is `weir.etcd.keys`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from weir.build import BuiltApp, DeploymentSpec, definition_version
from weir.config.autoscaling import AutoscalingConfig, autoscaling_of, without_scaling_of
from weir.config.deployment_options import merge_deployment_options, user_config_json
from weir.controller.reconciler import DeploymentTarget


@dataclass
class AppGoal:
    """One application's goal."""

    name: str
    #: The application's config as submitted (only the fields the user set).
    config: dict[str, Any]
    deployment_timestamp: float
    #: Hash of what building depends on (import path, args, runtime_env).
    build_key: str
    built_json: str | None = None
    build_error: str = ""
    #: Shipped by value (serve.run from a script): never rebuilt from an import path.
    by_value: bool = False

    def to_bytes(self) -> bytes:
        """Serialize for etcd."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> AppGoal:
        """Inverse of `to_bytes`."""
        return cls(**json.loads(data))

    @property
    def built(self) -> BuiltApp | None:
        """The built specs, if building is done."""
        return BuiltApp.from_json(self.built_json) if self.built_json else None

    @property
    def route_prefix(self) -> str | None:
        """Where HTTP reaches the app (None: no HTTP route)."""
        return self.config.get("route_prefix", "/")  # type: ignore[no-any-return]


def build_key(app_config: Mapping[str, Any], code_digest: str = "") -> str:
    """Hash of the inputs of building an app: a change means the app must be rebuilt.

    `code_digest`: the content hash of its runtime_env's local code (`weir.runtime_env.
    code_digest`), so changed code under an unchanged config is a change too."""
    basis = {k: app_config.get(k) for k in ("import_path", "args", "runtime_env")}
    basis["code"] = code_digest
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def apply_deploy(
    current: Mapping[str, AppGoal],
    app_configs: list[dict[str, Any]],
    *,
    partial: bool,
    by_value: Mapping[str, str],
    now: float,
    code_digests: Mapping[str, str] | None = None,
) -> tuple[dict[str, AppGoal], list[str]]:
    """The app goals to put and the app names to delete for a deploy.

    An app whose config is unchanged is left as it is (deploying the same file twice is a
    no-op). An app whose build inputs are unchanged keeps its built specs, so changing only
    deployment options never re-imports code.
    """
    puts: dict[str, AppGoal] = {}
    for cfg in app_configs:
        name = cfg.get("name", "default")
        key = build_key(cfg, (code_digests or {}).get(name, ""))
        prev = current.get(name)
        if name in by_value:
            built: str | None = by_value[name]
        elif prev is not None and prev.build_key == key and prev.built_json and not prev.by_value:
            built = prev.built_json
        else:
            built = None
        if (prev is not None and prev.config == cfg and prev.build_key == key
                and prev.built_json == built and built):
            continue
        puts[name] = AppGoal(name=name, config=cfg, deployment_timestamp=now, build_key=key,
                             built_json=built, by_value=name in by_value)
    deletes = [] if partial else [n for n in current if n not in {c.get("name", "default")
                                                                   for c in app_configs}]
    return puts, deletes


@dataclass(frozen=True)
class DeploymentPlan:
    """A deployment's target plus what a replica of it needs to start."""

    #: With autoscaling, num_replicas is the count to start with; the leader's autoscaling
    #: step sizes it (`weir.controller.autoscaler`).
    target: DeploymentTarget
    options: dict[str, Any]
    spec: DeploymentSpec
    ingress: bool
    autoscaling: AutoscalingConfig | None = None


def deployment_plans(goal: AppGoal) -> list[DeploymentPlan]:
    """Targets of an app's deployments (empty until it is built)."""
    built = goal.built
    if built is None:
        return []
    plans = []
    for spec in built.deployments:
        entry = next((d for d in goal.config.get("deployments") or []
                      if d.get("name") == spec.name), None)
        options = merge_deployment_options(without_scaling_of(spec.options, entry), entry,
                                           goal.config.get("logging_config"))
        version = definition_version(spec, options, extra=goal.build_key)
        autoscaling = _autoscaling(options)
        fixed = options["num_replicas"]
        start = (autoscaling.start_replicas if autoscaling is not None
                 else fixed if isinstance(fixed, int) else 1)
        target = DeploymentTarget(goal.name, spec.name, version, start,
                                  user_config_json(options.get("user_config")))
        plans.append(DeploymentPlan(target, options, spec, spec.ingress, autoscaling))
    return plans


def _autoscaling(options: dict[str, Any]) -> AutoscalingConfig | None:
    """The autoscaling of a deployment's options. A goal written by a Weir that ignored
    autoscaling_config (and did not check it) may hold one that is invalid now: such a
    deployment keeps what that Weir ran, num_replicas, rather than stopping the leader's
    loop on every pass."""
    try:
        return autoscaling_of(options)
    except ValueError:
        return None
