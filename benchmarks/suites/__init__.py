"""Runnable side-by-side comparisons; results land in benchmarks/results/."""
