"""Benchmark harness and scenarios (see README.md)."""
