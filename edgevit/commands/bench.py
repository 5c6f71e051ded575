"""`edgevit bench`: time, measure and compare every artifact of a bundle on this machine (the harness in
`benchmarks.bench` does the work; this command picks the inputs, shows progress and writes the results).

Inputs: the bundle does not store reference inputs, so image inputs (the model's [1, 3, H, W] float input) are
the photos scikit-image ships, preprocessed as the manifest says (normalised, or 0..255 for a unit that takes
the image raw); every other input is drawn from a seeded generator in the unit's shape and dtype.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from edgevit.data.bench_inputs import bench_inputs
from edgevit.errors import EdgevitError


def bench(
    bundle: Path,
    target: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    as_json: bool,
    out: Path | None,
    force: bool,
    device: str = "local",
    tracking: TrackerOptions | None = None,
) -> None:
    from rich.console import Console

    from benchmarks.bench import BenchSettings
    from benchmarks.bench_results import results_tables
    from benchmarks.devices import DeviceError, open_device
    from benchmarks.report import json_safe, print_tables
    from converters.bundle import atomic_file, check_file_out, read_manifest
    from converters.targets.registry import resolve_targets

    targets = resolve_targets(target) if target and target != "all" else None
    if out is not None:
        check_file_out(out, force)
    manifest = read_manifest(bundle)
    if targets is not None and not any(a["target"] in targets for a in manifest["artifacts"]):
        have = ", ".join(sorted({a["target"] for a in manifest["artifacts"]}))
        raise EdgevitError(f"{bundle} has no {', '.join(targets)} artifact; it holds: {have}")
    tracking = tracking or TrackerOptions()
    if manifest["model"].get("loop") == "video" and device == "local":
        tracking.check(manifest)
    inputs, note = bench_inputs(manifest)
    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads, targets=targets)
    console = Console(stderr=True)
    try:  # a device that cannot be reached or is lost mid-run: one line (the farm records it instead)
        bench_on = open_device(device)
        bench_on.check()
        with bench_progress(console) as progress:
            results = bench_on.bench(bundle, settings, progress, (inputs, note))
            if manifest["model"].get("loop") == "video":
                results["tracker"] = tracker_section(bundle, manifest, settings, device, tracking, progress)
    except DeviceError as exc:
        raise EdgevitError(str(exc)) from None
    text = json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n"
    if out is not None:
        with atomic_file(out, force) as tmp:
            tmp.write_text(text)
    if as_json:
        sys.stdout.write(text)
    else:
        print_tables(results_tables(results), Console())


@dataclass(frozen=True)
class TrackerOptions:
    """What an EfficientTAM bundle's trackers are compared on: a clip (first `frames` frames, centre click) and
    optionally a DAVIS-layout folder (J&F against its masks), against the eager tracker of `checkpoint` if given."""

    clip: str = "sample:bikes"
    frames: int = 8
    davis: Path | None = None
    davis_frames: int | None = None
    checkpoint: Path | None = None

    def check(self, manifest: dict[str, Any]) -> None:
        """Refuse bad options (a checkpoint that is not the bundle's included) before anything is benched."""
        from edgevit.data.video import resolve_video
        from edgevit.video.fidelity import check_checkpoint

        if self.frames < 2:
            raise EdgevitError(f"--clip-frames must be at least 2 (frame 0 is the prompt), got {self.frames}")
        if self.davis_frames is not None and self.davis_frames < 3:
            raise EdgevitError(
                f"--davis-frames must be at least 3 (J&F skips the first and last), got {self.davis_frames}"
            )
        resolve_video(self.clip)
        if self.davis is not None:
            from benchmarks.davis import DavisError, read_davis

            try:
                read_davis(self.davis)
            except DavisError as exc:
                raise EdgevitError(f"--davis: {exc}") from None
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise EdgevitError(f"--checkpoint {self.checkpoint} does not exist; pass the bundle's checkpoint file")
        if self.checkpoint is not None:
            check_checkpoint(manifest, self.checkpoint)


def tracker_section(
    bundle: Path, manifest: dict[str, Any], settings: Any, device: str, tracking: TrackerOptions, progress: Any
) -> dict[str, Any]:
    """The `tracker` part of the results: mask IoU per target × precision on the clip, and J&F with --davis."""
    if device != "local":
        return {"note": f"tracker fidelity runs on the local device only (not on {device})"}
    from benchmarks.bench import not_here_reason
    from edgevit.data.video import read_frames, resolve_video
    from edgevit.video.calibration import centre_click
    from edgevit.video.fidelity import clip_fidelity, davis_fidelity, eager_reference

    reference = None
    if tracking.checkpoint is not None:
        reference = ("eager fp32 (checkpoint)", eager_reference(manifest, tracking.checkpoint))
    path = resolve_video(tracking.clip)
    frames = list(read_frames(path, tracking.frames))
    note = f"{tracking.clip} ({path.name}), first {len(frames)} frames, one click at the centre of frame 0"
    section = clip_fidelity(
        bundle, manifest, frames, centre_click(frames[0]), note,
        reference=reference, threads=settings.threads, targets=settings.targets, not_here=not_here_reason,
        progress=progress,
    )  # fmt: skip
    if tracking.davis is not None:
        section["davis"] = davis_fidelity(
            bundle, manifest, tracking.davis, reference=reference, threads=settings.threads,
            max_frames=tracking.davis_frames, targets=settings.targets, not_here=not_here_reason,
        )  # fmt: skip
    return section


def bench_progress(console: Any) -> Any:
    """A rich progress bar on stderr (quiet off a terminal); the returned object is also the harness's callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class Bar(Progress):
        tasks_by_label: dict[str, Any]

        def __call__(self, label: str, done: int, total: int) -> None:
            if label not in self.tasks_by_label:
                self.tasks_by_label[label] = self.add_task(label, total=total)
            self.update(self.tasks_by_label[label], completed=done)

    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    bar.tasks_by_label = {}
    return bar


def bench_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `edgevit convert`.")],
    target: Annotated[str | None, typer.Option(help="Only these targets: onnx, tflite, ... or a comma list.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed calls per artifact, after warm-up.")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls first (allocation, lazy init, caches).")] = 5,
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads (default: one per core).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here (input to `edgevit report`).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    device: Annotated[
        str, typer.Option(help="local, ssh:[USER@]HOST[:PORT], adb:SERIAL or mac:HOST (see benchmarks/devices).")
    ] = "local",
    clip: Annotated[
        str, typer.Option(help="EfficientTAM bundles: the clip the trackers are compared on (a video or sample:bikes).")
    ] = "sample:bikes",
    clip_frames: Annotated[int, typer.Option(help="EfficientTAM bundles: frames of the clip tracked.")] = 8,
    davis: Annotated[
        Path | None, typer.Option(help="EfficientTAM bundles: a DAVIS-layout folder; adds J&F against its masks.")
    ] = None,
    davis_frames: Annotated[int | None, typer.Option(help="At most this many frames per DAVIS sequence.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="EfficientTAM bundles: the checkpoint the bundle was made from; the eager tracker of it "
            "becomes the reference (else the bundle's fp32 tracker)."
        ),
    ] = None,  # fmt: skip
) -> None:
    """Time every artifact of a bundle here: latency, throughput, peak memory, load time, fidelity, energy.

    For an EfficientTAM bundle, its converted trackers are also compared with a reference tracker on a clip
    (mask IoU) and, with --davis, scored against ground-truth masks (J&F).

    Example: edgevit bench bundle/ --runs 50 --threads 1 --out results.json  (add --device ssh:pi@board to run there)
    """
    tracking = TrackerOptions(clip, clip_frames, davis, davis_frames, checkpoint)
    bench(bundle, target, runs, warmup, threads, as_json, out, force, device, tracking)
