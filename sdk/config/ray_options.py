"""Options Weir accepts from Ray Serve's API but does not act on: one registry, one warning
per name, and the TypeError for a keyword nobody accepts.

Why accept them at all: code and config files written for Ray Serve should run on Weir
unchanged. Why warn: an option dropped in silence hides a real difference; whoever asks for
`ray_actor_options={"num_gpus": 1}` must learn that no GPU was reserved. Why only once per
process and name: a decorator runs again in every replica that imports its module, and
`handle.options(...)` may sit in a hot loop. Why refuse what is in neither list: a typo
(`serve.run(app, nmae="x")`) that vanished would deploy something the user did not ask for.

Every entry of `IGNORED` is also a row of docs/compatibility.md. Implementing an option
means deleting its entry here (for a deployment option, `weir.config.deployment_options` then
counts its schema default among the defaults of the options Weir acts on).
"""

from __future__ import annotations

import difflib
import inspect
import threading
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from weir.exceptions import IgnoredRayOptionWarning

if TYPE_CHECKING:
    from pydantic import BaseModel

# Where an option is given; each is also the phrase a warning uses ("the <scope> option").
RUN = "serve.run()"
START = "serve.start()"
HANDLE_OPTIONS = "DeploymentHandle.options()"
#: `@serve.deployment(...)`, `Deployment.options(...)` and a config file's deployment entries.
DEPLOYMENT = "deployment"
#: A config file's application entries (dotted names reach into nested sections).
APPLICATION = "application"
#: A config file's cluster-wide fields (dotted names reach into http_options, ...).
CONFIG = "config file"

_NO_EXTERNAL_SCALER = ("Weir scales deployments by its own autoscaler (autoscaling_config) "
                       "only, with no API for an external scaler yet")
_BY_VALUE = "Weir sends handle arguments and results by value, cloudpickled (no Ray object store)"

#: scope -> option -> why Weir does not act on it.
IGNORED: Mapping[str, Mapping[str, str]] = MappingProxyType({
    RUN: {
        "external_scaler_enabled": _NO_EXTERNAL_SCALER,
    },
    START: {
        "proxy_location": "Weir runs the proxies its cluster was started with",
        "detached": "a cluster from `weir start` outlives the script, an embedded one does not",
        "dedicated_cpu": "Weir's controller is a plain process, not a Ray actor",
    },
    HANDLE_OPTIONS: {
        "use_new_handle_api": "Weir has only the DeploymentHandle API (the option has no effect "
                              "in Ray either)",
        "_prefer_local_routing": "Weir's router has no notion of node locality",
        "_by_reference": _BY_VALUE,
        "request_serialization": _BY_VALUE,
        "response_serialization": _BY_VALUE,
    },
    DEPLOYMENT: {
        "placement_group_bundles": "Weir has no placement groups",
        "placement_group_strategy": "Weir has no placement groups",
        "graceful_shutdown_wait_loop_s": "a draining replica stops as soon as its last call "
                                         "ends (graceful_shutdown_timeout_s still bounds it)",
        "request_router_config": "Weir routes by power of two choices only",
        "max_constructor_retry_count": "Weir retries a failing constructor with backoff (up to "
                                       "30 s apart) until the config changes",
    },
    APPLICATION: {
        "external_scaler_enabled": _NO_EXTERNAL_SCALER,
        "runtime_env.pip": "Weir does not install packages: install them where the replicas "
                           "run",
        "host": "the proxies' address is the cluster's http_options (Ray deprecated the "
                "per-application one)",
        "port": "the proxies' port is the cluster's http_options (Ray deprecated the "
                "per-application one)",
        "autoscaling_policy": "Weir has one autoscaling policy, Ray's default (queue length)",
    },
    CONFIG: {
        "proxy_location": "Weir runs the proxies its cluster was started with",
        "target_capacity": "Weir runs every deployment at its full target; scale it with "
                           "num_replicas or autoscaling_config",
        "grpc_options.request_timeout_s": "Weir's gRPC ingress passes calls through with the "
                                          "client's own deadline",
    },
})

_lock = threading.Lock()
_warned: set[tuple[str, str]] = set()


def ignored_names(scope: str) -> frozenset[str]:
    """The options Weir accepts at `scope` without acting on them."""
    return frozenset(IGNORED[scope])


def warn_ignored(scope: str, given: Mapping[str, Any], *, at: str = "",
                 stacklevel: int = 1) -> None:
    """Warn (IgnoredRayOptionWarning) for each option of `given` that Weir ignores at `scope`,
    once per process and name. A value of None asks for nothing and is skipped, as are options
    Weir acts on. `at` says where the option was found (a config file's field paths);
    `stacklevel` counts frames above the caller, as `warnings.warn` does.
    """
    reasons = IGNORED[scope]
    for name, value in given.items():
        if value is None or name not in reasons:
            continue
        with _lock:
            if (scope, name) in _warned:
                continue
            _warned.add((scope, name))
        where = f" (at {at})" if at else ""
        warnings.warn(
            f"Weir ignores the {scope} option {name!r}{where}: {reasons[name]}. It is accepted "
            "so that Ray Serve code and configs run unchanged (docs/compatibility.md).",
            IgnoredRayOptionWarning, stacklevel=stacklevel + 1)


def forget_warnings() -> None:
    """Let every option warn again (for tests: each would otherwise warn once per process)."""
    with _lock:
        _warned.clear()


def refuse_unknown(api: str, func: Callable[..., Any], unexpected: Mapping[str, Any]) -> None:
    """TypeError naming each keyword in `unexpected` (with the closest accepted one) and
    listing the keywords `func` accepts; nothing if `unexpected` is empty.

    `api` is how the user wrote the call ("serve.run"); the accepted keywords come from
    `func`'s signature, so the message cannot drift from it.
    """
    if not unexpected:
        return
    accepted = [p.name for p in inspect.signature(func).parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    named = []
    for name in unexpected:
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        named.append(repr(name) + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "s" if len(named) > 1 else ""
    raise TypeError(f"{api}() got unexpected keyword argument{plural} {', '.join(named)}; it "
                    f"accepts: {', '.join(accepted)}")


# ----------------------------------------------------------------- config files


def _used(model: BaseModel, dotted: str) -> Any:
    """The value a config sets at `dotted` (e.g. "http_options.root_path"), or None when it
    does not set it or sets it to its default (asking for nothing Weir would not do)."""
    *parents, last = dotted.split(".")
    for part in parents:
        if part not in model.model_fields_set:
            return None
        model = getattr(model, part)
    if last not in model.model_fields_set:
        return None
    value = getattr(model, last)
    default = type(model).model_fields[last].get_default(call_default_factory=True)
    return None if value == default else value


def ignored_in_config(config: BaseModel) -> list[tuple[str, str, str]]:
    """(scope, option, field path) of each field a config (a `ServeDeploySchema`) sets, to a
    value other than its default, that Weir accepts without acting on it. Pure."""
    found = [(CONFIG, name, name) for name in IGNORED[CONFIG] if _used(config, name) is not None]
    for i, app in enumerate(getattr(config, "applications", [])):
        found += [(APPLICATION, name, f"applications[{i}].{name}")
                  for name in IGNORED[APPLICATION] if _used(app, name) is not None]
        for j, entry in enumerate(app.deployments):
            found += [(DEPLOYMENT, name, f"applications[{i}].deployments[{j}].{name}")
                      for name in IGNORED[DEPLOYMENT] if _used(entry, name) is not None]
    return found


def warn_ignored_in_config(config: BaseModel) -> None:
    """Warn once per option for what `ignored_in_config` finds, naming every path that set it
    (`weir deploy`, `weir run` and `weir build` call this on the file they read)."""
    paths: dict[tuple[str, str], list[str]] = {}
    for scope, name, path in ignored_in_config(config):
        paths.setdefault((scope, name), []).append(path)
    for (scope, name), where in paths.items():
        at = "" if where == [name] else ", ".join(where)
        warn_ignored(scope, {name: True}, at=at, stacklevel=2)

