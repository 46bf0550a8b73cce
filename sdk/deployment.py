"""`@serve.deployment`, Deployment and Application: the user's declaration, as plain data.

A Deployment wraps a class or function with its options; `.bind()` makes an Application, a
node of the graph whose arguments may hold other Applications. Nothing here talks to a
cluster: `weir.build` turns a graph into the specs a controller runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from weir.config import ray_options
from weir.config.autoscaling import AUTO, without_scaling_of
from weir.config.deployment_options import (
    DEFAULT_DEPLOYMENT_OPTIONS,
    merge_deployment_options,
    validate_deployment_options,
)
from weir.config.schema import DeploymentSchema

#: Every option Weir acts on, with its default (Ray Serve's defaults; one source: the schema).
DEFAULT_OPTIONS = DEFAULT_DEPLOYMENT_OPTIONS

T = TypeVar("T")


@dataclass(frozen=True)
class Deployment:
    """A class or function served as replicas, with the options the user set on it."""

    func_or_class: Any
    name: str
    #: Only the options the user set explicitly; defaults are applied at build time so that a
    #: config file's overrides and the decorator's values merge field by field.
    options_set: dict[str, Any] = field(default_factory=dict)

    @property
    def options_full(self) -> dict[str, Any]:
        """Every option, the user's over the defaults."""
        return merge_deployment_options(self.options_set)

    @property
    def num_replicas(self) -> int | str:
        """The number of replicas asked for, or "auto" (autoscaling with Ray's defaults)."""
        value = self.options_full["num_replicas"]
        return value if value == AUTO else int(value)

    @property
    def max_ongoing_requests(self) -> int:
        """How many requests one replica runs at once."""
        return int(self.options_full["max_ongoing_requests"])

    @property
    def max_queued_requests(self) -> int:
        """How many requests each caller queues for this deployment (-1: no bound)."""
        return int(self.options_full["max_queued_requests"])

    @property
    def user_config(self) -> Any:
        """The user_config passed to `reconfigure()`."""
        return self.options_full["user_config"]

    def options(self, **options: Any) -> Deployment:
        """A copy with some options changed (validated; a bad one raises naming it)."""
        name = options.pop("name", self.name)
        checked = validate_deployment_options(**options)
        _warn_ignored(checked)
        # num_replicas and autoscaling_config are one choice: setting one replaces both.
        kept = without_scaling_of(self.options_set, checked)
        return Deployment(self.func_or_class, name, {**kept, **checked})

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        """An application node: this deployment with its constructor arguments."""
        return Application(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Deployment {self.name!r} cannot be called directly: use "
            f"`{self.name}.bind(...)` and `serve.run(...)`, then call it through its handle."
        )


@dataclass(frozen=True)
class Application:
    """A bound deployment: the root (ingress) of an application graph, or one of its nodes."""

    deployment: Deployment
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


@overload
def deployment(_func_or_class: T) -> Deployment: ...


@overload
def deployment(
    _func_or_class: None = None, *, name: str | None = None, **options: Any
) -> Callable[[Any], Deployment]: ...


def deployment(
    _func_or_class: Any = None, *, name: str | None = None, **options: Any
) -> Deployment | Callable[[Any], Deployment]:
    """Declare a class or function as a deployment: `@serve.deployment` or
    `@serve.deployment(num_replicas=2, max_ongoing_requests=2, ...)`.

    Options: num_replicas (a number, or "auto" to autoscale), autoscaling_config (Ray Serve's;
    not beside a numeric num_replicas), max_ongoing_requests (default 5), max_queued_requests
    (default -1, unbounded), user_config, health_check_period_s, health_check_timeout_s,
    graceful_shutdown_timeout_s, and the rest of Ray Serve's (ray_actor_options, ...), which
    are accepted and warn once that Weir ignores them. A bad or unknown option raises
    ConfigError naming it.
    """
    checked = validate_deployment_options(**options)
    _warn_ignored(checked)

    def wrap(target: Any) -> Deployment:
        if not (inspect.isclass(target) or callable(target)):
            raise TypeError(f"@serve.deployment takes a class or a function, got {target!r}")
        return Deployment(target, name or target.__name__, checked)

    if _func_or_class is not None:
        return wrap(_func_or_class)
    return wrap


def _warn_ignored(options: dict[str, Any]) -> None:
    """Warn for the options Weir ignores that ask for something (differ from their default),
    pointing at the user's line (two frames up: the decorator or `.options()` call)."""
    fields = DeploymentSchema.model_fields
    ray_options.warn_ignored(
        ray_options.DEPLOYMENT,
        {k: v for k, v in options.items() if v != fields[k].get_default()}, stacklevel=3)
