"""Int8 kernels counted in a written artifact as its runtime sees it, never from a plan or the artifact's facts.

Tests compare these counts with the number of GEMMs/convs the plan quantizes: equal counts prove every planned
layer runs as an integer kernel (a silently float artifact, or a layer the backend left in float, shows here).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

# onnxruntime's CPU EP fuses QDQ around MatMul/Gemm/Conv into these (QGemm needs the int32 bias; a QDQ MatMul
# whose output stays float becomes MatMulIntegerToFloat; an activation-activation MatMul QLinearMatMul).
ORT_INT8_OPS = ("QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QLinearConv", "ConvInteger")
ORT_FLOAT_GEMMS = ("MatMul", "Gemm", "Conv", "FusedMatMul", "FusedConv", "FusedGemm")


_XNN_GEMM_NODES = (
    "XNNFullyConnected",
    "XNNConv2d",
    "XNNDepthwiseConv2d",
    "XNNConvTranspose2d",
    "XNNBatchMatrixMultiply",
)


def xnnpack_gemms(path: Path) -> Counter[tuple[str, str, str]]:
    """(node type, weight datatype, input datatype) of every GEMM/conv node in the .pte's XNNPACK delegates.

    A qd8 GEMM reads a `qdint8` input (int8, quantized per call) and a `qcint8`/`qcint4` weight."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader, _get_schema_bytes
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(path).read_bytes()).program
    found: Counter[tuple[str, str, str]] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "schema.fbs").write_bytes(_get_schema_bytes())
        for plan in program.execution_plan:
            for delegate in plan.delegates:
                assert delegate.id == "XnnpackBackend", delegate.id
                blob = bytes(program.backend_delegate_data[delegate.processed.index].data)
                header = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
                start = header.flatbuffer_offset
                (Path(tmp) / "graph.bin").write_bytes(blob[start : start + header.flatbuffer_size])
                _flatc_decompile(tmp, str(Path(tmp) / "schema.fbs"), str(Path(tmp) / "graph.bin"), ["--raw-binary"])
                text = (Path(tmp) / "graph.json").read_text()
                graph = json.loads(re.sub(r"(?<=[:\[,\s])(-?)(inf|nan)\b", _json_non_finite, text))
                dtype = {}
                for value in graph["xvalues"]:
                    tensor = value["xvalue_union"].get("tensor_value", value["xvalue_union"])
                    dtype[tensor["id_out"]] = tensor["datatype"].removeprefix("xnn_datatype_")
                for node in graph["xnodes"]:
                    kind, fields = node["xnode_union_type"], node["xnode_union"]
                    if kind in _XNN_GEMM_NODES:
                        weight = dtype[fields["filter_id"]] if "filter_id" in fields else dtype[fields["input2_id"]]
                        found[kind, weight, dtype[fields["input1_id"]]] += 1
    return found


def _json_non_finite(match: re.Match[str]) -> str:
    return "NaN" if match.group(2) == "nan" else match.group(1) + "Infinity"


_LITERT_GEMMS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "BATCH_MATMUL")


def litert_gemms(path: Path) -> Counter[tuple[str, str]]:
    """(op, weight dtype) of every GEMM/conv op LiteRT's interpreter will run (input 1 holds the weight; for
    BATCH_MATMUL it is the second activation)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    found: Counter[tuple[str, str]] = Counter()
    for op in interp._get_ops_details():
        if op["op_name"] in _LITERT_GEMMS:
            found[op["op_name"], dtypes[op["inputs"][1]]] += 1
    return found
