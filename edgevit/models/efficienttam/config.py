"""EfficientTAM hyper-parameters, from the official configs (efficienttam_{ti,s}[_512x512|_1|_2].yaml).

The official variants differ only in the ViT trunk width/heads, the input size and, for `_1`/`_2`, the
memory cross-attention (`EfficientRoPEAttention1/2`: pooled memory keys and values, same weights); everything
else (memory encoder, SAM heads) is shared. Capacities that the official code leaves dynamic
(memory frames, object pointers, prompt points) are fixed here so every deploy unit has static shapes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgevit.errors import EdgevitError


@dataclass(frozen=True)
class EfficientTAMConfig:
    embed_dim: int = 384  # ViT trunk width (ViT-S: 384, ViT-Ti: 192)
    num_heads: int = 6
    depth: int = 12
    patch_size: int = 16
    mlp_ratio: float = 4.0
    window_size: int = 14
    window_block_indexes: tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    pretrain_img_size: int = 224  # the trunk's pos_embed is stored at 224/16 = 14x14 (+ cls)
    image_size: int = 1024
    d_model: int = 256  # neck / SAM head / memory attention width
    mem_dim: int = 64  # memory encoder output channels
    memory_attention_layers: int = 4
    efficient_memory: int = 0  # 0: full memory cross-attention; 1/2: official EfficientRoPEAttention1/2
    rope_theta: float = 10000.0
    num_maskmem: int = 7  # 1 conditioning frame + 6 previous frames
    max_obj_ptrs: int = 16
    max_points: int = 8  # prompt slots: clicks, 2 box corners, and SAM's padding point
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    # build_sam2_video_predictor(apply_postprocessing=True) defaults
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    def __post_init__(self) -> None:
        if self.efficient_memory not in (0, 1, 2):
            raise EdgevitError(
                f"efficient_memory must be 0 (full memory attention), 1 or 2 (pooled), got {self.efficient_memory}"
            )

    @property
    def official_checkpoint(self) -> bool:
        """Whether the official release has weights for this configuration: the `_1`/`_2` memory exists
        only at 1024 there, though the official classes build it at any size."""
        return not self.efficient_memory or self.image_size == 1024

    @property
    def feat_size(self) -> int:
        """Side of the image feature map (image_size / 16)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the SAM decoder's mask logits (4x the feature map)."""
        return 4 * self.feat_size


VARIANTS: dict[str, EfficientTAMConfig] = {
    "ti": EfficientTAMConfig(embed_dim=192, num_heads=3, image_size=1024),
    "s": EfficientTAMConfig(embed_dim=384, num_heads=6, image_size=1024),
    "ti_512": EfficientTAMConfig(embed_dim=192, num_heads=3, image_size=512),
    "s_512": EfficientTAMConfig(embed_dim=384, num_heads=6, image_size=512),
}
# ti_1, ti_2, s_1, s_2: the official efficient-memory configs (1024); ti_512_1 ... s_512_2: the same memory
# attention at 512, for which no official checkpoint exists.
VARIANTS |= {
    f"{base}_{version}": dataclasses.replace(VARIANTS[base], efficient_memory=version)
    for base in ("ti", "s", "ti_512", "s_512")
    for version in (1, 2)
}
