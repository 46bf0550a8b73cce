"""Errors users of Weir see, named as in Ray Serve so that `except` clauses carry over."""

from __future__ import annotations


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
    """User code raised in a replica; carries the remote exception's type and traceback text."""

    def __init__(self, error_type: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{error_type}: {message}\n\nRemote traceback:\n{traceback_text}")
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text


class ClusterError(RayServeException):
    """The control plane (controller or etcd) refused or could not be reached."""


class IgnoredRayOptionWarning(UserWarning):
    """An option Weir accepts from Ray Serve's API but does not act on was used.

    Each option warns once per process, by name, with the reason (`weir.config.ray_options`);
    silence them all with
    `warnings.filterwarnings("ignore", category=IgnoredRayOptionWarning)`.
    """
