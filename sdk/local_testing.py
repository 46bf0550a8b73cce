"""Ray's local testing mode: `serve.run(app, _local_testing_mode=True)` runs the application
in the calling process, with no cluster, for fast unit tests.

Each deployment is one instance in this process. Handles work unchanged: `LocalPlane` stands
in for the data plane (`weir.context.use_local_plane`), so `handle.remote()`, `.result()`,
`await`, streaming and handles passed into constructors behave as against a cluster, and
arguments and results still travel cloudpickled (a test catches what would not pickle).
HTTP is not served, as in Ray; a deployment has one replica whatever its num_replicas.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import traceback
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from weir.build import BuiltApp
from weir.protos import weir_pb2 as pb
from weir.runtime_context import RequestContext, serving
from weir.user_method import user_method

__all__ = ["LocalPlane"]


@dataclass
class _Local:
    """One deployment, constructed in this process."""

    instance: Any
    is_function: bool

    def method(self, name: str) -> Callable[..., Any]:
        return user_method(self.instance, self.is_function, name)


def _error_reply(exc: BaseException) -> pb.CallReply:
    """USER_ERROR carrying the exception, as a replica sends it (the caller raises it as its
    own class, `weir.exceptions.remote_error`)."""
    reply = pb.CallReply(
        outcome=pb.USER_ERROR, error=str(exc) or type(exc).__name__,
        error_type=type(exc).__name__,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        reply.pickled = cloudpickle.dumps(exc.with_traceback(None))
    except Exception:
        pass  # the caller gets the generic UserCodeError
    return reply


def _serve(app: str, request: pb.CallRequest) -> None:
    """The request context of the call, as a replica sets it (`serve.get_multiplexed_model_id`,
    the request id that handle calls carry on). The call runs in a task of its own."""
    serving(RequestContext(request_id=request.request_id, app_name=app,
                           multiplexed_model_id=request.multiplexed_model_id))


async def _in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking user code off the loop, as a replica does, keeping the context."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(ctx.run, func, *args, **kwargs))


class LocalPlane:
    """The data plane of local testing mode: calls go to instances in this process.
    It offers the two calls handles make on `weir.dataplane.caller.DataPlane`."""

    def __init__(self) -> None:
        self._apps: dict[str, dict[str, _Local]] = {}

    async def deploy(self, app: BuiltApp) -> None:
        """Construct every deployment of `app` (replacing an app of that name) and apply
        its user_config; a constructor's error propagates."""
        built: dict[str, _Local] = {}
        for spec in app.deployments:
            target, args, kwargs = cloudpickle.loads(spec.definition)
            if not inspect.isclass(target):
                built[spec.name] = _Local(target, True)
                continue
            instance = await _in_thread(target, *args, **kwargs)
            user_config = spec.options.get("user_config")
            reconfigure = getattr(instance, "reconfigure", None)
            if user_config is not None and reconfigure is not None:
                if inspect.iscoroutinefunction(reconfigure):
                    await reconfigure(user_config)
                else:
                    await _in_thread(reconfigure, user_config)
            built[spec.name] = _Local(instance, False)
        self._apps[app.name] = built

    def delete(self, app: str) -> None:
        """Forget an application (`serve.delete`)."""
        self._apps.pop(app, None)

    def _find(self, app: str, deployment: str) -> _Local:
        try:
            return self._apps[app][deployment]
        except KeyError:
            from weir.exceptions import DeploymentUnavailableError

            raise DeploymentUnavailableError(
                f"no deployment {deployment!r} in application {app!r} in local testing mode "
                f"(running: {sorted(self._apps)})") from None

    async def call(self, app: str, deployment: str, request: pb.CallRequest,
                   deadline: float | None) -> pb.CallReply:
        """Call a method of the deployment's instance; its value or error as a reply."""
        local = self._find(app, deployment)
        _serve(app, request)
        try:
            args, kwargs = cloudpickle.loads(request.pickled_args)
            method = local.method(request.method)
            if inspect.iscoroutinefunction(method):
                result = await method(*args, **kwargs)
            else:
                result = await _in_thread(method, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            return pb.CallReply(outcome=pb.OK, pickled=cloudpickle.dumps(result))
        except Exception as exc:
            return _error_reply(exc)

    async def stream(self, app: str, deployment: str, request: pb.CallRequest,
                     deadline: float | None) -> AsyncGenerator[pb.CallReply, None]:
        """A streaming call: a first reply (the call started), then one reply per item."""
        local = self._find(app, deployment)
        _serve(app, request)
        try:
            args, kwargs = cloudpickle.loads(request.pickled_args)
            produced = local.method(request.method)(*args, **kwargs)
        except Exception as exc:
            yield _error_reply(exc)
            return
        yield pb.CallReply(outcome=pb.OK)
        try:
            if inspect.isasyncgen(produced):
                async for item in produced:
                    yield pb.CallReply(outcome=pb.OK, pickled=cloudpickle.dumps(item))
            else:
                end = object()
                while (item := await _in_thread(next, produced, end)) is not end:
                    yield pb.CallReply(outcome=pb.OK, pickled=cloudpickle.dumps(item))
        except Exception as exc:
            yield _error_reply(exc)

    async def close(self) -> None:
        """Drop every application (serve.shutdown)."""
        self._apps.clear()
