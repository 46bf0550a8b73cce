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

from weir.config.schema import validate_deployment_options

#: Options and their defaults, as in Ray Serve.
DEFAULT_OPTIONS: dict[str, Any] = {
    "num_replicas": 1,
    "max_ongoing_requests": 5,
    "max_queued_requests": -1,
    "user_config": None,
    "health_check_period_s": 10.0,
    "health_check_timeout_s": 30.0,
    "graceful_shutdown_timeout_s": 20.0,
    "graceful_shutdown_wait_loop_s": 2.0,
}

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
        return {**DEFAULT_OPTIONS, **self.options_set}

    @property
    def num_replicas(self) -> int:
        """The number of replicas asked for."""
        return int(self.options_full["num_replicas"])

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
        return Deployment(self.func_or_class, name, {**self.options_set, **checked})

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

    Options: num_replicas, max_ongoing_requests (default 5), max_queued_requests (default -1,
    unbounded), user_config, health_check_period_s, health_check_timeout_s,
    graceful_shutdown_timeout_s, and Ray's ray_actor_options / autoscaling_config (accepted).
    """
    checked = validate_deployment_options(**options)

    def wrap(target: Any) -> Deployment:
        if not (inspect.isclass(target) or callable(target)):
            raise TypeError(f"@serve.deployment takes a class or a function, got {target!r}")
        return Deployment(target, name or target.__name__, checked)

    if _func_or_class is not None:
        return wrap(_func_or_class)
    return wrap
