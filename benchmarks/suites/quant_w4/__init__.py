"""W4 side by side: the 4-bit weight quantizers of onnxruntime, torchao, AI Edge Quantizer and coremltools against
ours (min-max per-channel, group-wise MSE, group-wise MSE + GPTQ), in one run, on DINOv2-S held-out images.

Every method quantizes the model's Linear weights at 4 bits (the same group size where it takes one) and is
scored by output SQNR vs fp32 on held-out images (scikit-learn's photos and bigbuckbunny.mp4; calibration, where
a method uses it, on scikit-image's photos and bikes.mp4), by the bytes its 4-bit weights take, and — where it
writes a real artifact a runtime here runs — by that artifact's latency, all artifacts timed in one interleaved
group beside the fp32 artifact of their runtime. The issue's goal (ours group-wise ≥ best peer + 2 dB) is judged
in the summary, met or missed.

Modules: `peers` (the peers' APIs), `ours` (our plans), `measure` (a run: rows and timings), `report` (the table
and the goal, pure), `run` (the command line). `python -m benchmarks.suites.quant_w4 --help`.
"""
