"""Weir: serve Python services and ML models in production with Ray Serve's API.

    from weir import serve

    @serve.deployment(num_replicas=2)
    class Hello:
        def __call__(self, request):
            return "Hello!"

    serve.run(Hello.bind())
"""

from weir import serve

__all__ = ["serve"]
__version__ = "0.1.0"
