"""Benchmark harness and suites (a leaf: reads bundles by their manifest only)."""
