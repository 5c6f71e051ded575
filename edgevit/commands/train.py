"""`edgevit train`: MatFormer training of a MatViT (every nested width at once) on labelled images, to a checkpoint.

The data is scikit-learn's digits ("builtin") or a folder with one sub-folder per class; the weights are cached
like the students', and the checkpoint is `{"model": state_dict}`, the format `--checkpoint` reads everywhere.
The command prints the `edgevit extract` flags that cut a sub-model out of it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from edgevit.errors import EdgevitError


def train(
    model_name: str,
    variant: str | None,
    overrides: Sequence[str],
    data: str,
    epochs: int,
    seed: int,
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    import torch

    from converters.bundle import atomic_file, check_file_out
    from edgevit.compress.matformer import MatTrainConfig, trained
    from edgevit.data.labelled import load_labelled
    from edgevit.models import create
    from edgevit.pipeline import parse_overrides

    if model_name != "matvit":
        raise EdgevitError(f"edgevit train trains matvit models (MatFormer), not {model_name!r}; see `edgevit distill`")
    out = Path(out)
    if out.is_dir():
        raise EdgevitError(f"--out {out} is a folder; the checkpoint is one file (e.g. --out matvit.pt)")
    check_file_out(out, force)
    sets = parse_overrides(overrides)

    def build(**extra: object):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return create(model_name, variant, **{**sets, **extra})

    model = build()
    labelled = load_labelled(data if data == "builtin" else str(Path(data).resolve()), model.spec)
    if "num_classes" not in sets and model.cfg.num_classes != len(labelled.classes):
        sets["num_classes"] = len(labelled.classes)
        model = build()
    metrics, cached, was_cached = trained(model, labelled, MatTrainConfig(epochs=epochs), seed=seed)
    with atomic_file(out, force) as tmp:
        torch.save({"model": model.state_dict()}, tmp)
    flags = " ".join(
        ["--model matvit", f"--variant {model.spec.variant}"]
        + [f"--set {shlex.quote(f'{k}={v!r}')}" for k, v in sets.items()]
        + [f"--checkpoint {shlex.quote(str(out))}", f"--data {shlex.quote(data)}"]
    )
    if as_json:
        summary = {"checkpoint": str(out), "cache": str(cached), "from_cache": was_cached, "classes": labelled.classes,
                   "metrics": metrics, "extract_flags": flags}  # fmt: skip
        print(json.dumps(summary, indent=2))
        return
    _print(model.spec.variant, seed, was_cached, metrics, out, cached, flags)


def _print(variant: str, seed: int, was_cached: bool, metrics: dict, out: Path, cached: Path, flags: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"matvit {variant} (MatFormer, seed {seed}{', from cache' if was_cached else ''})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        shown = f"{100 * value:.1f} %" if key.startswith("accuracy") else f"{value:.4g}"
        table.add_row(key.replace("accuracy@", "held-out accuracy, MLP x"), shown)
    console = Console()
    console.print(table)
    console.print(f"checkpoint: {out}", soft_wrap=True)
    console.print(f"cached weights: {cached}", soft_wrap=True)
    console.print(f"extract with: edgevit extract {flags} --budget-mparams N --target onnx --out DIR", soft_wrap=True)


def train_cmd(
    model: Annotated[str, typer.Option(help="Model to train: matvit (MatFormer: every nested MLP width at once).")],
    variant: Annotated[str | None, typer.Option(help="Variant, e.g. mini_32 (trains in about a minute here).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a model config field, KEY=VALUE (repeatable).")
    ] = None,
    data: Annotated[
        str, typer.Option(help="'builtin' (scikit-learn's digits) or a folder with one sub-folder per class.")
    ] = "builtin",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, the data order and the widths drawn.")] = 0,
    out: Annotated[Path, typer.Option(help="Checkpoint file to write ({'model': state_dict}).")] = Path("matvit.pt"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train a MatViT with MatFormer's per-step sampling of nested MLP widths and write its checkpoint (cached).

    Example: edgevit train --model matvit --variant mini_32 --data builtin --out matvit.pt
    """
    train(model, variant, set_ or [], data, epochs, seed, out, force, as_json)
