"""`weir.serve.handle`: Ray's `ray.serve.handle` module path (`from ray.serve.handle import
DeploymentHandle` reads as `from weir.serve.handle import DeploymentHandle`)."""

from weir.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator"]
