"""The config: schema, file format, errors, deployment options, dry-run diff, middlewares."""
