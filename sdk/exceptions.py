"""Errors users of Weir see, named as in Ray Serve so that `except` clauses carry over."""

from __future__ import annotations

from typing import Any


class RayServeException(Exception):
    """Base of every Weir error raised to user code (Ray Serve's name, kept for compatibility)."""


WeirError = RayServeException


class BackPressureError(RayServeException):
    """A caller's queue for a deployment is full (max_queued_requests): the request was shed.

    HTTP callers get 503 with Retry-After, gRPC callers RESOURCE_EXHAUSTED.
    """

    def __init__(self, *, num_queued_requests: int, max_queued_requests: int) -> None:
        super().__init__(
            f"Request dropped due to backpressure "
            f"(num_queued_requests={num_queued_requests}, "
            f"max_queued_requests={max_queued_requests})."
        )
        self.num_queued_requests = num_queued_requests
        self.max_queued_requests = max_queued_requests


class RequestTimeoutError(RayServeException, TimeoutError):
    """The request outlived its end-to-end deadline; its work on the replica was cancelled."""


class DeploymentUnavailableError(RayServeException):
    """No replica of the deployment could take the request before its deadline."""


class RequestCancelledError(RayServeException):
    """The caller cancelled the request."""


class UserCodeError(RayServeException):
    """User code raised in a replica; carries the remote exception's type and traceback text.

    What a caller gets is usually also an instance of the remote exception's own class
    (`remote_error`), so `except ValueError:` works as with Ray.
    """

    def __init__(self, error_type: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{error_type}: {message}\n\nRemote traceback:\n{traceback_text}")
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text


def remote_error(error_type: str, message: str, traceback_text: str,
                 pickled_cause: bytes = b"") -> UserCodeError:
    """The error to raise in the caller for an exception user code raised in a replica.

    As in Ray, it is an instance of the user's own class too (`except ValueError:` works
    around `.result()`): its class subclasses both UserCodeError and the cause's class, its
    `args` and attributes are the cause's, `cause` is the cause itself, and its text names
    the type and gives the remote traceback. A cause that cannot be rebuilt here (its class
    cannot be imported in the caller, or cannot be combined) gives the plain UserCodeError.
    """
    generic = UserCodeError(error_type, message, traceback_text)
    if not pickled_cause:
        return generic
    import cloudpickle

    try:
        cause = cloudpickle.loads(pickled_cause)
        kind = _remote_class(type(cause))
        error = kind.__new__(kind, *cause.args)
    except Exception:
        return generic
    error.__dict__.update(cause.__dict__)
    error.__dict__.update(generic.__dict__)
    error.args = cause.args
    error.__dict__.update(cause=cause, _text=str(generic))
    return error


_remote_classes: dict[type[BaseException], type[UserCodeError]] = {}


def _remote_class(cause: type[BaseException]) -> type[UserCodeError]:
    """UserCodeError and `cause` in one class (made once per cause class)."""
    if not issubclass(cause, Exception) or issubclass(cause, UserCodeError):
        raise TypeError(f"{cause!r} is not combined")
    kind = _remote_classes.get(cause)
    if kind is None:
        kind = type(f"UserCodeError({cause.__name__})", (UserCodeError, cause), {
            "__module__": __name__, "__qualname__": f"UserCodeError({cause.__qualname__})",
            "__str__": lambda self: self._text,
            "__reduce__": _reduce_remote,
        })
        _remote_classes[cause] = kind
    return kind


def _reduce_remote(error: UserCodeError) -> tuple[Any, tuple[Any, ...]]:
    # The combined class exists only in this process: pickle the parts it is made of.
    import cloudpickle

    return remote_error, (error.error_type, error.message, error.traceback_text,
                          cloudpickle.dumps(getattr(error, "cause", None)))


class ClusterError(RayServeException):
    """The control plane (controller or etcd) refused or could not be reached."""


class IgnoredRayOptionWarning(UserWarning):
    """An option Weir accepts from Ray Serve's API but does not act on was used.

    Each option warns once per process, by name, with the reason (`weir.config.ray_options`);
    silence them all with
    `warnings.filterwarnings("ignore", category=IgnoredRayOptionWarning)`.
    """
