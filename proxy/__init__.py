"""The proxy: HTTP (ASGI on hypercorn or uvicorn) and gRPC ingress over the shared data plane."""
