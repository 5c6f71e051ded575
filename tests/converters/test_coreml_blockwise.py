"""Group-wise weights in Core ML: per-block int4 constants holding the plan's integers, read back from the package."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from converters import DeployUnit
from converters.quantized import convert_quantized
from converters.targets.coreml.program import gemm_weights, load_program
from quant.fake_quant import collect_stats
from quant.groupwise import quantize_weight_ints


def test_group_plan_is_stored_as_plan_blockwise_int4(tmp_path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 10)).eval()
    images = [torch.randn(4, 64) for _ in range(4)]
    plan = collect_stats(model, images, progress=False).use_groups({4: 16}).plan(4, 8)
    unit = DeployUnit("mlp", model, (images[0],), ("x",), ("y",))
    art = convert_quantized(unit, "coreml", plan, tmp_path)  # spec-validated: no Core ML runtime on Linux
    assert art.facts["minimum_deployment_target"] == "iOS18"
    assert art.facts["quant"]["weight_bits_held"] == {"linear": {"int4": 2}}

    held = {w.shape: w for w in gemm_weights(load_program(art.path))}
    head, q = held[(10, 48)], plan.layers["2"].weight
    assert head.storage == "int4" and np.array_equal(head.levels, quantize_weight_ints(model[2].weight, q).numpy())
    # one fp16 scale per block of 16 columns: constant along each block, the plan's value
    planned = np.repeat(np.asarray(q.scale, np.float32).reshape(10, 3), 16, axis=1)
    assert np.allclose(head.scale, planned, rtol=2.0**-10)
    assert not np.allclose(head.scale[:, :16], head.scale[:, 16:32])  # really per block, not per row
