"""What a written .pte really holds, read back from the file.

`xnnpack_gemm_dtypes` decodes each XNNPACK delegate's graph (its flatbuffer, with the schema ExecuTorch
ships) and counts, per GEMM kind, the datatype of the weights and of the inputs XNNPACK was handed (e.g.
4-bit `qcint4` weights with dynamic int8 `qdint8` inputs).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

# XNNPACK graph nodes that read a weight (`filter_id`), by the layer kind a plan calls them.
_XNN_GEMMS = {
    "XNNFullyConnected": "linear",
    "XNNConv2d": "conv",
    "XNNDepthwiseConv2d": "conv",
    "XNNConvTranspose2d": "conv_transpose",
}


_NON_FINITE = re.compile(r"(?<=[:\[,])(\s*)(-?inf|-?nan)(?=\s*[,\]}])")
_JSON_NON_FINITE = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN", "-nan": "NaN"}


def xnnpack_graphs(path: Path) -> tuple[list[dict], dict[str, bytes]]:
    """The .pte's XNNPACK delegate graphs (decoded to JSON with the schema ExecuTorch ships) and the named
    constants they point to (`constant_data[i].named_key` → the bytes the program stores under that key)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader, _get_schema_bytes
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DataLocation

    pte = deserialize_pte_binary(Path(path).read_bytes())
    program = pte.program  # delegate segments moved inline
    blobs = [
        bytes(program.backend_delegate_data[d.processed.index].data)
        for plan in program.execution_plan
        for d in plan.delegates
        if d.id == "XnnpackBackend" and d.processed.location == DataLocation.INLINE
    ]
    graphs = []
    with tempfile.TemporaryDirectory() as tmp:
        schema = Path(tmp) / "schema.fbs"
        schema.write_bytes(_get_schema_bytes())
        for index, blob in enumerate(blobs):
            header = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
            graph_bin = Path(tmp) / f"graph{index}.bin"
            graph_bin.write_bytes(blob[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size])
            _flatc_decompile(tmp, str(schema), str(graph_bin), ["--raw-binary"])
            text = (Path(tmp) / f"graph{index}.json").read_text()
            # flatc writes non-finite floats (e.g. an unbounded output_min_max) as bare inf/nan.
            graphs.append(json.loads(_NON_FINITE.sub(lambda m: m.group(1) + _JSON_NON_FINITE[m.group(2)], text)))
    named = pte.named_data
    constants = {} if named is None else {k: bytes(named.buffers[e.buffer_index]) for k, e in named.pte_data.items()}
    return graphs, constants


def xnnpack_gemm_dtypes(path: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Per GEMM kind in the .pte's XNNPACK delegates, how many read each weight / input datatype.

    E.g. `{"linear": {"weights": {"qcint4": 9}, "inputs": {"qdint8": 9}}}`: datatype names are XNNPACK's
    (`xnn_datatype_` dropped): qcint4/qcint8 per-channel 4/8-bit, qbint4 blockwise 4-bit, qdint8 int8
    quantized at run time, fp32/fp16 float.
    """
    found: dict[str, dict[str, Counter[str]]] = {}
    for graph in xnnpack_graphs(path)[0]:
        dtypes = {}
        for value in graph.get("xvalues", []):
            tensor = value["xvalue_union"].get("tensor_value", value["xvalue_union"])
            dtypes[tensor["id_out"]] = str(tensor["datatype"]).removeprefix("xnn_datatype_")
        for node in graph.get("xnodes", []):
            kind = _XNN_GEMMS.get(node["xnode_union_type"])
            if kind is None:
                continue
            counts = found.setdefault(kind, {"weights": Counter(), "inputs": Counter()})
            counts["weights"][dtypes.get(node["xnode_union"]["filter_id"], "unknown")] += 1
            counts["inputs"][dtypes.get(node["xnode_union"]["input1_id"], "unknown")] += 1
    return {kind: {part: dict(c) for part, c in counts.items()} for kind, counts in sorted(found.items())}
