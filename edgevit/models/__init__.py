"""Model families, importable by name: `edgevit.models.create("efficienttam_s")`."""

from edgevit.models import dinov2_focus, efficienttam, hybrid, matvit, vit  # noqa: F401  (each module registers its family)
from edgevit.models.registry import create, families, model_names, resolve
from edgevit.models.spec import EdgeModel, ModelSpec

__all__ = ["EdgeModel", "ModelSpec", "create", "families", "model_names", "resolve"]
