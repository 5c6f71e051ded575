"""The weight bytes a written quantized artifact holds, read back by each target's `facts` part behind the registry."""

from __future__ import annotations

import numpy as np

from converters import TARGETS, target_info


def test_targets_that_read_weight_bytes_back_have_the_reader() -> None:
    # ExecuTorch's XNNPACK blobs and LiteRT's flatbuffer are not read: their artifacts claim no written bytes.
    reading = [t for t in TARGETS if target_info(t).reads_weight_bytes]
    assert reading == ["onnx", "coreml"]
    assert all(callable(target_info(t).part("facts").written_weight_bytes) for t in reading)


def test_onnx_counts_integer_weights_with_their_scales_and_zero_points_only(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array, name)

    inits = [
        init("w8", np.ones((4, 8), np.int8)),  # 32 B
        init("w8_scale", np.ones(4, np.float32)),  # 16 B
        init("w8_zp", np.zeros(4, np.int8)),  # 4 B
        init("bias", np.ones(4, np.float32)),  # a bias: not counted
        init("wi", np.ones((8, 4), np.int8)),  # 32 B, read by MatMulInteger
        init("wi_zp", np.zeros((), np.int8)),  # 1 B
        init("wi_rescale", np.ones(4, np.float32)),  # 16 B, the Mul after the int32 output's Cast
        helper.make_tensor("w4", TensorProto.INT4, (4, 8), np.zeros(32, np.int8)),  # 16 B: nibbles
        init("w4_scale", np.ones(4, np.float32)),  # 16 B
        init("act_scale", np.ones((), np.float32)),  # an activation grid: not a weight
        init("act_zp", np.zeros((), np.int8)),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w8", "w8_scale", "w8_zp"], ["w8_f"], axis=0),
        helper.make_node("Gemm", ["x", "w8_f", "bias"], ["y1"], transB=1),
        helper.make_node("QuantizeLinear", ["y1", "act_scale", "act_zp"], ["y1_q"]),
        helper.make_node("MatMulInteger", ["y1_q", "wi", "act_zp", "wi_zp"], ["y2_i"]),
        helper.make_node("Cast", ["y2_i"], ["y2_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["y2_f", "wi_rescale"], ["y2"]),
        helper.make_node("DequantizeLinear", ["w4", "w4_scale"], ["w4_f"], axis=0),
        helper.make_node("MatMul", ["y2", "w4_f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert target_info("onnx").part("facts").written_weight_bytes(path, {}) == 32 + 16 + 4 + 32 + 1 + 16 + 16 + 16


def test_coreml_sums_the_storage_its_lowering_read_back(tmp_path) -> None:
    facts = target_info("coreml").part("facts")
    storage = {"int8": {"bytes": 1000.0, "layers": 2}, "palettized6": {"bytes": 234.0, "layers": 1}}
    assert facts.written_weight_bytes(tmp_path / "m.mlpackage", {"weight_storage": storage}) == 1234
    assert facts.written_weight_bytes(tmp_path / "m.mlpackage", {}) is None
