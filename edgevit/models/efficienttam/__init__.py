"""EfficientTAM (Efficient Track Anything): export-friendly, weight-compatible with the official checkpoints."""

from edgevit.models.efficienttam.config import VARIANTS, EfficientTAMConfig
from edgevit.models.efficienttam.model import EfficientTAM
from edgevit.models.registry import Family, register_family


def _build(cfg: EfficientTAMConfig, variant: str) -> EfficientTAM:
    return EfficientTAM(cfg, name="efficienttam", variant=variant)


register_family(
    Family(
        name="efficienttam",
        variants=VARIANTS,
        default_variant="s_512",
        build=_build,
        description="Efficient Track Anything: ViT image encoder + SAM heads + memory (video segmentation)",
    )
)

__all__ = ["EfficientTAM", "EfficientTAMConfig", "VARIANTS"]
