"""Lowering suite: every EfficientTAM deploy unit converted to every target, then timed against eager PyTorch.

Suites are the runnable comparisons that sit on top of the harness. The harness (`benchmarks.timing`,
`benchmarks.machine`, `benchmarks.report`, `benchmarks.cli`) stays free of model code, as `benchmarks/` is a
leaf; a suite has to build the models it measures, so this one imports `edgevit.models` — inside
`measure.run_model` only, so that importing the suite (for `--help`, or for its tables) costs no model code.

One run does, per model: a tiny warm-up conversion per target (backend imports, first-call caches —
reported apart, as a fresh `edgevit convert` process pays it once), the conversion of each unit with its
parity check against eager, then per unit the eager module and every artifact that can run here, timed
side by side (`benchmarks.timing.interleaved`) with the same thread count. Core ML converts but cannot run
off macOS; its rows say so instead of showing a time. The fp32 GEMM roof is measured at the start and the
end of the run and the higher median is used, so "% of peak" is never flattered by a roof taken under load.

`run` holds the command line and the run, `measure` what is measured per model, `report` the tables and the
goals, computed from the measured data alone.
"""
