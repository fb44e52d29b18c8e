"""Benchmark suites run by scripts/bench: each prints a table, then one JSON line."""
