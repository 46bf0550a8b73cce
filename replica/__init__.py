"""The replica process: the data-plane gRPC server, its controller session, the user's code."""
