"""The pipeline every command and suite goes through: a `Recipe` (flags or a TOML file) → `run` → a bundle.

`run` builds the model, applies the recipe's passes (`edgevit.pipeline.passes`: a config dataclass plus a
function each) to its deploy units, lowers them for every target and writes the bundle with the recipe that
made it (`recipe.toml`), so `edgevit convert --recipe bundle/recipe.toml` rebuilds it.
"""

from edgevit.pipeline.passes import PassData, PassRecord, QuantConfig
from edgevit.pipeline.recipe import Recipe, parse_overrides
from edgevit.pipeline.run import RECIPE_FILE, Progress, build_model, check, run, run_model

__all__ = [
    "RECIPE_FILE",
    "PassData",
    "PassRecord",
    "Progress",
    "QuantConfig",
    "Recipe",
    "build_model",
    "check",
    "parse_overrides",
    "run",
    "run_model",
]
