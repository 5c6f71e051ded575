"""ED-ViT's commands: `edgevit split` (a classifier → one bundle per device + `fusion.json`), `edgevit serve` (one
bundle behind gRPC) and `edgevit split-infer` (fan images out to the served sub-models, print the fused predictions).

The typer signatures live here, beside their code, and `edgevit.cli` registers them: this module is imported
when the CLI starts, so everything heavy is imported inside the functions.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from edgevit.errors import EdgevitError


def split_cmd(
    model: Annotated[str, typer.Option(help="The classifier's model name, e.g. vit.")],
    devices: Annotated[Path, typer.Option(help="devices.toml: [[devices]] name, memory_mb, address (optional).")],
    checkpoint: Annotated[Path | None, typer.Option(help="The trained classifier (.pt) to split.")] = None,
    variant: Annotated[str | None, typer.Option(help="Variant the checkpoint was trained as.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a model config field, KEY=VALUE (repeatable).")
    ] = None,
    data: Annotated[
        str, typer.Option(help="Its labelled data: 'builtin' (scikit-learn's digits) or a folder of class folders.")
    ] = "builtin",
    target: Annotated[str, typer.Option(help="onnx, executorch, tflite, coreml, all, or a comma list.")] = "onnx",
    prune_budget: Annotated[
        float, typer.Option("--prune-budget", help="Fraction of each sub-model's parameters pruned (0: none).")
    ] = 0.5,
    epochs: Annotated[int, typer.Option(help="Distillation epochs per sub-model.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of pruning's probes and the distillation order.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for one bundle per device and fusion.json.")] = Path("split"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fusion spec as JSON.")] = False,
) -> None:
    """Split a classifier into class-wise pruned, distilled sub-models, one per device (ED-ViT), plus a fusion spec.

    Example: edgevit split --model vit --variant ti16_224 --set img_size=32 --set num_classes=10
    --checkpoint vit_digits.pt --data builtin --devices devices.toml --out split/
    """
    split(
        model, variant, checkpoint, set_ or [], data, devices, target, prune_budget, epochs, seed, out, force, as_json
    )


def serve_cmd(
    bundle: Annotated[Path, typer.Argument(help="A one-unit bundle, e.g. one device's folder of `edgevit split`.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port, printed).")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    target: Annotated[str | None, typer.Option(help="Which target's artifact to run (default: the first checked).")] = (
        None
    ),
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads per request.")] = None,
) -> None:
    """Serve a bundle's model over gRPC (tensors as .npy) until Ctrl-C: one ED-ViT device.

    Example: edgevit serve split/pi-a --port 50051 --target onnx
    """
    serve(bundle, target, host, port, threads)


def split_infer_cmd(
    spec: Annotated[Path, typer.Argument(help="fusion.json, or the folder `edgevit split` wrote.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image files to classify.")] = None,
    address: Annotated[
        list[str] | None, typer.Option(help="NAME=HOST:PORT of a device (default: devices.toml's address).")
    ] = None,
    deadline_ms: Annotated[
        float, typer.Option("--deadline-ms", help="Per-call deadline; a device later than this is left out.")
    ] = 2000.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
) -> None:
    """Send each image to every served sub-model, gather within the deadline, fuse into one prediction.

    A device that is gone or late is left out and the prediction is flagged partial (exit 0, a warning line);
    none answering is an error. Example: edgevit split-infer split/ digit.png --address pi-a=127.0.0.1:50051
    """
    split_infer(spec, images or [], address or [], deadline_ms, as_json)


def split(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    overrides: Sequence[str],
    data: str,
    devices_path: Path,
    target: str,
    prune_budget: float,
    epochs: int,
    seed: int,
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    from converters import resolve_targets
    from converters.bundle import check_out
    from edgevit.compress.split.devices import read_devices
    from edgevit.compress.split.split import SplitSettings, split_classifier
    from edgevit.compress.split.submodel import DistillSettings, prune_settings
    from edgevit.data.labelled import load_labelled
    from edgevit.models import create
    from edgevit.pipeline import parse_overrides

    if checkpoint is None:
        raise EdgevitError("ED-ViT splits a trained classifier: pass its --checkpoint (e.g. from `edgevit distill`)")
    if epochs < 1:
        raise EdgevitError(f"--epochs {epochs}: distillation needs at least 1 epoch")
    if prune_budget:
        prune_settings(prune_budget, seed)  # refuses a bad budget before any slow work
    devices = read_devices(devices_path)
    targets = tuple(resolve_targets(target))
    settings = SplitSettings(prune_budget, DistillSettings(epochs=epochs), seed, targets)
    data_path = None if data == "builtin" else data
    check_out(out, force, inputs=[checkpoint, data_path, devices_path])
    full = create(model_name, variant, checkpoint=checkpoint, **parse_overrides(overrides))
    labelled = load_labelled(data, full.spec)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if not as_json else (lambda _: None)
    result = split_classifier(
        full, labelled, devices, settings, out, checkpoint=checkpoint, force=force, say=say, progress=not as_json
    )
    spec = result.spec
    if as_json:
        print(spec.to_json(), end="")
        return
    _print_split(spec, out)


def _print_split(spec, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = spec.metrics
    table = Table(title=f"ED-ViT split into {len(spec.devices)} devices ({out})")
    for column in ("device", "classes", "parameters", "weights MB", "memory MB", "address"):
        table.add_column(column, justify="right" if column in ("parameters", "weights MB", "memory MB") else "left")
    for d in spec.devices:
        names = ", ".join(spec.classes[c] for c in d.classes)
        params = metrics["sub_parameters"][d.name]
        table.add_row(
            d.name, names, f"{params:,}", f"{d.weights_bytes / 2**20:.3f}", f"{d.memory_mb:g}", d.address or "-"
        )
    console = Console()
    console.print(table)
    console.print(
        f"held-out accuracy: full {100 * metrics['full_accuracy']:.1f} %, "
        f"fused {100 * metrics['fused_accuracy']:.1f} % "
        f"(top-1 agreement {100 * metrics['fused_top1_agreement_with_full']:.1f} %, "
        f"{metrics['held_out_images']} images); full model {metrics['full_parameters']:,} parameters",
        soft_wrap=True,
    )
    console.print(f"serve each: edgevit serve {out}/<device> --port P; then: edgevit split-infer {out} IMAGE")


def split_infer(
    spec_path: Path, images: Sequence[Path], addresses: Sequence[str], deadline_ms: float, as_json: bool
) -> None:
    from edgevit.compress.split.client import SplitClient
    from edgevit.compress.split.fusion import FusionSpec, check_bundle
    from edgevit.data.images import load_image, preprocess
    from edgevit.models.spec import ModelSpec

    spec = FusionSpec.read(spec_path)
    root = spec_path if spec_path.is_dir() else spec_path.parent
    for device in spec.devices:  # the bundles beside the spec, where they are: a mismatch is refused here
        if (root / device.bundle).exists():
            check_bundle(device, root / device.bundle)
    if not images:
        raise EdgevitError("no image given; pass one or more image files")
    by_name = dict(_address(a) for a in addresses)
    model_spec = ModelSpec("split", "", spec.input_size, "classification", spec.mean, spec.std)
    frames = [(path, preprocess(load_image(path), model_spec).numpy()) for path in images]
    results = []
    with SplitClient(spec, by_name, deadline_ms / 1000) as client:
        for path, frame in frames:
            prediction = client.predict(frame)
            if prediction.partial:
                gone = ", ".join(f"{name} ({why})" for name, why in prediction.missing.items())
                print(f"warning: {path}: partial prediction, no answer from {gone}", file=sys.stderr)
            results.append({"image": str(path), **prediction.to_dict(spec.classes)})
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        flag = f"  PARTIAL (missing: {', '.join(r['missing'])})" if r["partial"] else ""
        print(f"{r['image']}: {r['class']} ({100 * r['probability']:.1f} %){flag}")


def _address(pair: str) -> tuple[str, str]:
    name, sep, address = pair.partition("=")
    if not sep or not name or not address.rpartition(":")[2].isdigit():
        raise EdgevitError(f"--address {pair!r} is not NAME=HOST:PORT (e.g. --address pi-a=127.0.0.1:50051)")
    return name, address


def serve(bundle: Path, target: str | None, host: str, port: int, threads: int | None) -> None:
    from edgevit.compress.split.server import serve as run_server

    def ready(model, bound: int) -> None:
        outputs = model.artifact["outputs"][0]["shape"]
        print(
            f"serving {bundle} ({model.artifact['target']}, input {list(model.shape)}, output {outputs}) "
            f"on {host}:{bound}; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop ends the server like Ctrl-C: exit 130
    run_server(bundle, target, host, port, threads, ready)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
