"""The `weir` / `serve` command line: commands, admin client, embedded local cluster."""
