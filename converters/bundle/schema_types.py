"""The vocabulary the manifest dataclasses describe the published schema with, and the schema-only shapes.

`converters.bundle.schema_gen` turns annotations into JSON Schema; this module holds what annotations alone cannot
say. A shared type is `Annotated[python type, Keywords(schema keywords)]`, its "$def" keyword publishing it once
under that name in the schema's `$defs` (every use refers to it); `about` puts a field's description and keywords
into its metadata. `EfficientTAMConfig` is the one closed object no manifest dataclass holds (configs stay dicts).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from converters.artifact import OutputParity, TensorSpec


class Keywords(dict):
    """JSON Schema keywords an `Annotated` type adds. Hashable (by identity) because typing hashes the metadata of
    the types in a union such as `Sha256 | None`."""

    __hash__ = object.__hash__


Name = Annotated[
    str,
    Keywords(
        {
            "$def": "name",
            "description": "A name shown to people and used as a key: no control characters.",
            "pattern": r"^[^\u0000-\u001f\u007f-\u009f]{1,200}$",
            "errorMessage": "must be 1 to 200 characters without control characters",
        }
    ),
]
Text = Annotated[str, Keywords({"$def": "text", "maxLength": 4096})]
Sha256 = Annotated[
    str,
    Keywords(
        {
            "$def": "sha256",
            "pattern": "^[0-9a-f]{64}$",
            "errorMessage": "must be a sha256 digest (64 lowercase hex digits)",
        }
    ),
]
RelPath = Annotated[
    str,
    Keywords(
        {
            "$def": "relpath",
            "description": "A path relative to the bundle folder, '/'-separated; no leading '/', no '.' or '..' "
            "segment, no backslash.",
            "maxLength": 1024,
            "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.+=@-]*(/[A-Za-z0-9_][A-Za-z0-9_.+=@-]*)*$",
            "errorMessage": "must be a relative path inside the bundle ('/'-separated, no leading '/', no '..')",
        }
    ),
]
JsonFloat = Annotated[
    float | Literal["inf", "-inf", "nan"],
    Keywords({"$def": "float", "description": 'A number, or "inf"/"-inf"/"nan" for non-finite values.'}),
]
Dtype = Annotated[
    Literal[
        "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
        "uint64", "uint32", "uint16", "uint8", "bool",
    ],
    Keywords({"$def": "dtype", "description": "A numpy dtype name."}),
]  # fmt: skip
Shape = Annotated[
    tuple[Annotated[int, Keywords(minimum=-1)], ...],
    Keywords(
        {
            "$def": "shape",
            "description": "Dimensions; -1 marks a dynamic dimension (units have static shapes).",
            "maxItems": 8,
        }
    ),
]
Parity = Annotated[
    dict[str, OutputParity],
    Keywords(
        {
            "$def": "parity",
            "description": "Artifact vs eager PyTorch on the same inputs, per output.",
            "minProperties": 1,
        }
    ),
]
Target = Literal["onnx", "executorch", "tflite", "coreml"]
Count = Annotated[int, Keywords(minimum=1)]
Index = Annotated[int, Keywords(minimum=0)]
Positive = Annotated[float, Keywords(exclusiveMinimum=0)]

# TensorSpec and OutputParity live in converters/artifact.py, which knows nothing of the schema: their names in
# $defs and the schema types of their fields.
EXTERNAL: dict[type, dict[str, Any]] = {
    TensorSpec: {"$def": "tensor", "types": {"name": Name, "shape": Shape, "dtype": Dtype}},
    OutputParity: {"$def": "output_parity", "types": {"sqnr_db": JsonFloat, "max_abs_diff": JsonFloat}},
}


def about(
    description: str | None = None, *, default: Any = MISSING, absent_if_none: bool = False, **schema: Any
) -> Any:
    """A field with what its annotation cannot tell the schema: a description and JSON Schema keywords.
    `absent_if_none`: None is written by leaving the key out (the schema has no null for it) rather than as null."""
    described = {"description": description} if description else {}
    meta = {"schema": described | schema, "absent_if_none": absent_if_none}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class EfficientTAMConfig:
    """Schema only: the `model.config` of EfficientTAM bundles. `ModelInfo.config` stays a dict (open per model);
    the schema holds EfficientTAM's to this, since its capacities fix the shapes the video loop fills."""

    __schema__: ClassVar[dict[str, Any]] = {
        "$def": "efficienttam_config",
        "description": "EfficientTAM's hyper-parameters, including the fixed capacities the units' shapes follow.",
    }

    embed_dim: Count
    num_heads: Count
    depth: Count
    patch_size: Count
    mlp_ratio: Positive
    window_size: Index
    window_block_indexes: tuple[Index, ...]
    pretrain_img_size: Count
    image_size: int = about(minimum=16)
    d_model: Count
    mem_dim: Count
    memory_attention_layers: Count
    rope_theta: Positive
    num_maskmem: Count = about("Memory slots: the prompted frame and the previous frames.")
    max_obj_ptrs: Count = about("Object-pointer slots.")
    max_points: Count = about("Prompt slots: clicks, two box corners and SAM's padding point.")
    sigmoid_scale_for_mem_enc: float
    sigmoid_bias_for_mem_enc: float
    dynamic_multimask_stability_delta: float
    dynamic_multimask_stability_thresh: float
    efficient_memory: Index = about(
        "Memory cross-attention: 0 full; 1 or 2 the official EfficientRoPEAttention1/2 (2x2-pooled memory).",
        default=0,
        maximum=2,
    )
