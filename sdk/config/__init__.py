"""The config schema (one for CLI, SDK and controller) and the HTTP middlewares it names."""
