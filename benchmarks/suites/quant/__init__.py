"""Quantization suite: edgevit's PTQ, MPTQ and Q-HyViT side by side with the peers, on real trained weights.

Per model, every method is calibrated on the same images and judged on held-out images from other source
files (`subjects`). Three sections, each runnable alone (`--sections`, `--models`, `--methods`,
`--peers`) and merged into one results file (a later run replaces only the methods it measured again, see
`merge`, so a long run can be split or partly redone):

- `uniform`: output SQNR vs fp32, top-1 agreement and accuracy (where labels exist) at each bit setting, for
  ours (`ptq`, `mptq`, and `qhyvit` with and without joint bridge reconstruction on hybrids; fake-quant in
  torch) and the peers (onnxruntime `quantize_static`, ExecuTorch's `XNNPACKQuantizer`, AI Edge Quantizer —
  evaluated in their own runtimes, or in their PT2E graph where that is the only form of a bit-width).
- `mixed`: greedy mixed precision under budgets given as fractions of the W8A8 plan's weight bytes.
- `deploy`: real int8 artifacts (ours through `converters.quantized`, the peers' own) per target that runs
  here, their SQNR vs fp32 measured by running them, then every artifact timed side by side with eager fp32
  and the fp32 artifacts (`benchmarks.timing.interleaved`, medians). Core ML cannot run on Linux: its row
  says so.

A method that fails on a model (a peer crashing, a layer ours cannot handle) becomes a row with its error in
one line; the suite goes on. The issue's goals are judged in the summary, with the margin either way.

Modules: `flags` (the command line), `subjects` (the models and their images), `workspace` (one model's
state and scoring), `jobs` (a step and its row), `uniform`, `mixed` and `deploy` (the sections; `peers`
wraps the peers' APIs), `run` (a run), `results` (merging runs into one file), `report` and `goals`
(tables and verdicts from the stored rows alone). Our methods are `benchmarks.suites.quant.ours`.
"""
