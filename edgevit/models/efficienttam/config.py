"""EfficientTAM hyper-parameters, from the official configs (efficienttam_{ti,s}[_512x512].yaml).

The four official variants differ only in the ViT trunk width/heads and the input size; everything else
(memory attention, memory encoder, SAM heads) is shared. Capacities that the official code leaves dynamic
(memory frames, object pointers, prompt points) are fixed here so every deploy unit has static shapes.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    rope_theta: float = 10000.0
    num_maskmem: int = 7  # 1 conditioning frame + 6 previous frames
    max_obj_ptrs: int = 16
    max_points: int = 8  # prompt slots: clicks, 2 box corners, and SAM's padding point
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    # build_sam2_video_predictor(apply_postprocessing=True) defaults
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

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
