"""Benchmarks of Weir's data plane against bare baselines (see bench/README.md)."""
