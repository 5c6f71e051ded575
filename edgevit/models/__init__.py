"""Model families, importable by name: `edgevit.models.create("efficienttam_s")`."""

from edgevit.models import (  # noqa: F401  (each module registers its family)
    dinov2_focus,
    efficientformer,
    efficientnet_lite,
    efficienttam,
    matvit,
    mobilevit,
    vit,
)
from edgevit.models.registry import create, families, model_names, resolve
from edgevit.models.spec import EdgeModel, ModelSpec

__all__ = ["EdgeModel", "ModelSpec", "create", "families", "model_names", "resolve"]
