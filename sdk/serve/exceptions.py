"""`weir.serve.exceptions`: Ray's `ray.serve.exceptions` module path."""

from weir.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
    RequestCancelledError,
    RequestTimeoutError,
    UserCodeError,
)

#: Ray's name for an error raised by user code in a replica (Weir's UserCodeError).
RayTaskError = UserCodeError

__all__ = [
    "BackPressureError",
    "DeploymentUnavailableError",
    "RayServeException",
    "RayTaskError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "UserCodeError",
]
