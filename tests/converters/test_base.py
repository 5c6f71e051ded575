"""The narrow interface: dispatch, argument errors, one-line failures, nothing half-written, parity maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from converters import (
    MIN_SQNR_DB,
    ConversionError,
    DeployUnit,
    OutputParity,
    TensorSpec,
    check_parity,
    convert,
    max_abs_diff,
    precisions,
    sqnr_db,
)
from converters.base import lowering_error

from .conftest import CrossAttend


class ComplexRope(nn.Module):
    """RoPE written with complex numbers, as the official EfficientTAM memory attention does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
        return torch.view_as_real(c * c).flatten(-2)


def test_targets_and_their_precisions():
    assert precisions("onnx") == ("fp32",)
    assert precisions("coreml")[0] == "fp16"
    assert set(precisions("executorch")) == set(precisions("tflite")) == {"fp32", "fp16"}


def test_unknown_target_and_precision_list_the_valid_ones(vit_unit, tmp_path):
    with pytest.raises(ConversionError, match="unknown target 'tensorrt'; valid targets: onnx, executorch"):
        convert(vit_unit, "tensorrt", "fp32", tmp_path)
    with pytest.raises(ConversionError, match="does not support precision 'int3'; valid: fp32, fp16"):
        convert(vit_unit, "tflite", "int3", tmp_path)
    with pytest.raises(ConversionError, match="valid: fp32$"):
        convert(vit_unit, "onnx", "fp16", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_training_mode_and_duplicate_names_are_refused(tmp_path):
    training = DeployUnit("t", nn.Linear(2, 2), (torch.randn(1, 2),), ("x",), ("y",))
    with pytest.raises(ConversionError, match="training mode"):
        convert(training, "onnx", None, tmp_path)
    dup = DeployUnit("d", nn.Linear(2, 2).eval(), (torch.randn(1, 2),), ("x",), ("x",))
    with pytest.raises(ConversionError, match="unique"):
        convert(dup, "onnx", None, tmp_path)


def test_unlowerable_op_names_op_unit_target_fallback_and_leaves_nothing(tmp_path, cross_unit, fresh_inputs):
    good = convert(cross_unit, "onnx", "fp32", tmp_path, parity_inputs=fresh_inputs["cross"])
    before = good.path.read_bytes()
    # Same unit name, now with 3-D SDPA, which the ONNX exporter cannot lower: the good file must survive.
    bad = DeployUnit(
        "cross",
        CrossAttend(heads=0).eval(),
        cross_unit.example_inputs,
        cross_unit.input_names,
        cross_unit.output_names,
    )
    with pytest.raises(ConversionError) as err:
        convert(bad, "onnx", "fp32", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "\x1b" not in msg
    assert "onnx cannot lower op 'aten.scaled_dot_product_attention' in unit 'cross'" in msg
    assert "only 4D" in msg and msg.endswith("try --target executorch")
    assert [p.name for p in tmp_path.iterdir()] == ["cross.fp32.onnx"]
    assert good.path.read_bytes() == before


def test_coreml_complex_op_is_named_and_package_not_left(tmp_path):
    unit = DeployUnit("rope", ComplexRope().eval(), (torch.randn(1, 4, 8),), ("x",), ("y",))
    expected = r"coreml cannot lower op 'view_as_complex' in unit 'rope' .*; try --target executorch$"
    with pytest.raises(ConversionError, match=expected):
        convert(unit, "coreml", "fp16", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_removes_the_artifact(tmp_path, cross_unit):
    with pytest.raises(ConversionError, match=r"unit 'cross' on onnx: output 'scores' SQNR .* dB < 1000 dB"):
        convert(cross_unit, "onnx", "fp32", tmp_path, min_sqnr_db=1000)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_dir(tmp_path, cross_unit):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConversionError, match="cannot create output directory"):
        convert(cross_unit, "onnx", "fp32", blocker / "out")


def test_lowering_error_without_an_op_keeps_the_root_cause(cross_unit):
    try:
        try:
            raise ValueError("shape mismatch deep inside\nmore detail")
        except ValueError as inner:
            raise RuntimeError("conversion failed") from inner
    except RuntimeError as exc:
        err = lowering_error(exc, cross_unit, "tflite")
    assert str(err) == (
        "tflite failed to convert unit 'cross': ValueError: shape mismatch deep inside; try --target executorch"
    )


def test_sqnr_and_max_abs_diff():
    ref = np.ones(1000, dtype=np.float32)
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert sqnr_db(ref, ref) == math.inf
    assert math.isnan(sqnr_db(ref, np.full_like(ref, np.nan)))
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert max_abs_diff(ref, ref + np.linspace(0, 0.5, 1000)) == pytest.approx(0.5)
    assert OutputParity(math.inf, 0.0).to_dict() == {"sqnr_db": "inf", "max_abs_diff": 0.0}
    assert MIN_SQNR_DB == {"fp32": 60.0, "fp16": 30.0}


class _NoisyRunner:
    """Eager outputs plus a set amount of noise on the second output, standing in for a backend."""

    target = "fake"
    num_threads = 1

    def __init__(self, unit: DeployUnit, rel_noise: float) -> None:
        self.unit, self.rel_noise = unit, rel_noise
        pairs = zip(unit.input_names, unit.example_inputs, strict=True)
        self.inputs = tuple(TensorSpec(n, tuple(x.shape), "float32") for n, x in pairs)
        self.outputs = ()

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        out = [y.numpy() for y in self.unit.run_eager(*(torch.from_numpy(x) for x in inputs))]
        out[1] = out[1] + self.rel_noise * np.abs(out[1]).mean()
        return tuple(out)


def test_check_parity_fails_loudly_below_the_floor(cross_unit):
    figures = check_parity(cross_unit, _NoisyRunner(cross_unit, 1e-4))
    assert figures["scores"].sqnr_db == math.inf and 60 < figures["attended"].sqnr_db < 100
    expected = r"unit 'cross' on fake: output 'attended' SQNR \d+\.\d dB < 60 dB \(max abs diff"
    with pytest.raises(ConversionError, match=expected):
        check_parity(cross_unit, _NoisyRunner(cross_unit, 0.01))
    assert check_parity(cross_unit, _NoisyRunner(cross_unit, 0.01), min_sqnr_db=MIN_SQNR_DB["fp16"])


def test_pt2e_graph_converts_and_a_train_mode_export_is_refused(tmp_path):
    """An exported graph keeps `.training` True through `.eval()` (its train/eval behaviour was fixed at
    export), so the check reads its ops: a PT2E int8 graph converts with parity, a train-mode export does not."""
    from quant.fake_quant import calibrate
    from quant.pt2e import quantize_pt2e

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(512, 10))
    x = torch.randn(1, 3, 8, 8)
    plan = calibrate(model.eval(), [torch.randn(2, 3, 8, 8) for _ in range(4)], progress=False)
    graph = quantize_pt2e(model, (x,), plan)
    graph.eval()
    art = convert(DeployUnit("pt2e", graph, (x,), ("image",), ("logits",)), "onnx", None, tmp_path / "ok")
    print(f"PT2E int8 graph → ONNX: {art.parity['logits'].sqnr_db:.1f} dB")
    assert art.path.is_file() and art.parity["logits"].sqnr_db >= 40.0
    exported = torch.export.export(model.train(), (x,), strict=False).module()
    with pytest.raises(ConversionError, match="training mode"):
        convert(DeployUnit("trains", exported, (x,), ("image",), ("logits",)), "onnx", None, tmp_path / "no")
    assert not (tmp_path / "no").exists() or list((tmp_path / "no").iterdir()) == []


def test_an_artifact_that_fails_in_its_runtime_is_one_error_and_leaves_nothing(tmp_path) -> None:
    """The ONNX file is exported for batch 1; a batch of 2 runs eagerly but onnxruntime rejects it when run."""
    from converters import convert

    unit = DeployUnit("lin", nn.Linear(8, 4).eval(), (torch.randn(1, 8),), ("x",), ("y",))
    failed_to_run = r"'lin' on onnx: the written artifact fails in its runtime .*expects \(1, 8\)"
    with pytest.raises(ConversionError, match=failed_to_run):
        convert(unit, "onnx", out_dir=tmp_path, parity_inputs=(torch.randn(2, 8),))
    assert list(tmp_path.iterdir()) == []
