"""`edgevit extract`: a Mix'n'Match sub-model of a trained MatViT under a budget, as a verified bundle.

The flags become a recipe with one matformer pass, run by the pipeline like any conversion, so the bundle's
`recipe.toml` replays it (`edgevit convert --recipe DIR/recipe.toml`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from edgevit.errors import EdgevitError


def extract(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    overrides: Sequence[str],
    budget_mparams: float | None,
    budget_ms: float | None,
    data: str,
    target: str,
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    from edgevit.console.run import build
    from edgevit.pipeline import Recipe, parse_overrides
    from edgevit.pipeline.passes.extract import MatFormerConfig

    if model_name != "matvit":
        raise EdgevitError(f"edgevit extract cuts sub-models out of matvit (MatFormer) models, not {model_name!r}")
    if checkpoint is None:
        raise EdgevitError("--checkpoint is required: extract from a trained MatViT (see `edgevit train`)")
    source = data if data == "builtin" else str(Path(data).resolve())
    recipe = Recipe(
        model=model_name,
        variant=variant,
        checkpoint=checkpoint,
        overrides=parse_overrides(overrides),
        passes=(MatFormerConfig(budget_mparams=budget_mparams, budget_ms=budget_ms, data=source),),
        targets=tuple(target.split(",")),
    )
    build(recipe, out, force, as_json)


def extract_cmd(
    model: Annotated[str, typer.Option(help="matvit: the nested model to cut a sub-model out of.")],
    checkpoint: Annotated[Path | None, typer.Option(help="The trained MatViT (.pt, from `edgevit train`).")] = None,
    variant: Annotated[str | None, typer.Option(help="Variant the checkpoint was trained as, e.g. mini_32.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a model config field, KEY=VALUE (repeatable).")
    ] = None,
    budget_mparams: Annotated[
        float | None, typer.Option("--budget-mparams", help="Most parameters of the sub-model, in millions.")
    ] = None,
    budget_ms: Annotated[
        float | None, typer.Option("--budget-ms", help="Most ONNX Runtime latency here (one thread), in ms.")
    ] = None,
    data: Annotated[
        str, typer.Option(help="Held-out labelled images to choose on: 'builtin' (digits) or a class-folder tree.")
    ] = "builtin",
    target: Annotated[str, typer.Option(help="onnx, executorch, tflite, coreml, all, or a comma list.")] = "onnx",
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")] = Path("bundle-matvit"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Choose per-layer MLP widths of a trained MatViT under a budget (Mix'n'Match) and write the sub-model's bundle.

    Example: edgevit extract --model matvit --variant mini_32 --checkpoint matvit.pt --budget-mparams 0.12 --out b/
    """
    extract(model, variant, checkpoint, set_ or [], budget_mparams, budget_ms, data, target, out, force, as_json)
