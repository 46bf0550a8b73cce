"""The data plane of proxies and handles: route table, router, transport, request bodies."""
