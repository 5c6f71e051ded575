"""The quantization suite's command line: sections, models, methods, peers, bit settings and timing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.cli import comma_list
from benchmarks.suites.quant import ours, peers
from benchmarks.suites.quant.subjects import ENCODER_NAME, STUDENT_NAMES
from converters.targets.registry import TARGET_INFO

SECTIONS = ("uniform", "mixed", "deploy")
PEERS = ("ort", "xnnpack", "aeq")
# Deploy times every artifact, so it takes the targets whose runtime exists here (the registry says which).
TARGETS = tuple(name for name, info in TARGET_INFO.items() if info.runs_here())
DEFAULT_MODELS = ("dinov2_s_focus", "efficientnet_lite0", *STUDENT_NAMES, ENCODER_NAME)
EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.quant --models dinov2_s_focus,efficientnet_lite0,"
    "hybrid_distilled --bits w8a8,w4a8,w6a6 --runs 10 --threads 1,2 --out benchmarks/results/quant"
)


def parse_bits(text: str) -> tuple[int, int]:
    """Parse a bit setting: "w4a8" → (4, 8)."""
    low = text.strip().lower()
    if not (low.startswith("w") and "a" in low):
        raise ValueError(f"bit setting {text!r} is not WnAm (e.g. w8a8)")
    w, a = low[1:].split("a", 1)
    return int(w), int(a)


def bits_label(weight_bits: int | None, act_bits: int) -> str:
    return f"W{weight_bits}A{act_bits}" if weight_bits is not None else f"A{act_bits}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suites.quant",
        description="Quantize each model with edgevit's methods and the peers' on the same calibration images, "
        "judge them on held-out images, time the int8 artifacts; writes OUT.json and OUT.md.",
        epilog=f"example (three models; the defaults run every model, the EfficientTAM-S encoder in deploy only):\n"
        f"  {EXAMPLE}\n\nA quick look: --models dinov2_s_focus --sections uniform --peers ort --ort-calibrators "
        "MinMax --bits w8a8.\nRuns merge into OUT.json: the methods a run measures again replace their earlier rows "
        "(deploy: per model);\n--fresh starts over. On cores shared with other jobs, set OMP_WAIT_POLICY=PASSIVE "
        "(see the lowering suite).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--models", default=",".join(DEFAULT_MODELS), help="comma-separated (students and the encoder included)")
    add("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    add("--bits", default="w8a8,w4a8,w6a6", help="uniform bit settings WnAm, comma-separated")
    add("--methods", default="ptq,mptq,qhyvit", help="ours: ptq, mptq, qhyvit (qhyvit on hybrid models only)")
    add("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    add("--ort-calibrators", default=",".join(peers.ORT_CALIBRATORS), help="onnxruntime calibrate methods")
    add("--budgets", default="0.75,0.6,0.5", help="mixed precision: fractions of the W8A8 weight bytes")
    add("--mixed-base", default="ptq,mptq", help="the prepared models mixed precision plans on (ptq, mptq)")
    add("--targets", default=",".join(TARGETS), help=f"deploy: comma-separated, of {', '.join(TARGETS)}")
    add("--deploy-methods", default="ptq,mptq", help="ours on onnx; the best of them goes to tflite/executorch")
    add("--deploy-bits", default="w8a8,w4a8", help="ours: bit settings to lower where the target holds them")
    add("--qhyvit-iters", type=int, default=200, help="Q-HyViT reconstruction iterations per block")
    add("--qhyvit-bits", default="w4a8", help="Q-HyViT bit settings (each runs twice: bridges joint/separate)")
    add("--calib-images", type=int, default=24, help="calibration images per model (spread over the sources)")
    add("--eval-images", type=int, default=24, help="held-out images per model")
    add("--frames", type=int, default=14, help="video frames per clip for the packaged models")
    add("--student-cache", type=Path, default=None, help="students' trained-weights cache (default: theirs)")
    add("--runs", type=int, default=10, help="timed rounds (default 10)")
    add("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    add("--threads", default="1", help="thread count(s) for timing torch and every runtime, comma-separated")
    add("--work-threads", type=int, default=2, help="threads for calibration, conversion, evaluation")
    add("--out", type=Path, default=Path("benchmarks/results/quant"), help="results path stem (.json/.md)")
    add("--artifacts", type=Path, default=None, help="keep artifacts here (default: a temporary folder)")
    add("--fresh", action="store_true", help="do not merge into an existing OUT.json")
    add("--report-only", action="store_true", help="re-tabulate OUT.json without measuring anything")
    add("--show-backend-output", action="store_true", help="let backends print (default: to a log file)")
    args = parser.parse_args(argv)
    for name in (
        "models",
        "sections",
        "methods",
        "peers",
        "ort_calibrators",
        "targets",
        "deploy_methods",
        "mixed_base",
    ):
        setattr(args, name, comma_list(getattr(args, name)))
    try:
        args.bits = [parse_bits(b) for b in comma_list(args.bits)]
        args.deploy_bits = [parse_bits(b) for b in comma_list(args.deploy_bits)]
        args.qhyvit_bits = [parse_bits(b) for b in comma_list(args.qhyvit_bits)]
        args.threads = [int(t) for t in comma_list(args.threads)]
        args.budgets = [float(b) for b in comma_list(args.budgets)]
    except ValueError as exc:
        parser.error(str(exc))
    for name, valid in (
        ("sections", SECTIONS),
        ("peers", PEERS),
        ("targets", TARGETS),
        ("methods", ("ptq", "mptq", "qhyvit")),
        ("deploy_methods", ours.PLAN_METHODS),
        ("mixed_base", ours.PLAN_METHODS),
        ("ort_calibrators", peers.ORT_CALIBRATORS),
    ):
        if unknown := [v for v in getattr(args, name) if v not in valid]:
            parser.error(f"unknown {name.replace('_', '-')} {', '.join(unknown)}; valid: {', '.join(valid)}")
    if args.runs < 1 or args.warmup < 0 or not args.threads or min(args.threads) < 1 or args.work_threads < 1:
        parser.error("need --runs >= 1, --warmup >= 0, --threads >= 1, --work-threads >= 1")
    if args.calib_images < 4 or args.eval_images < 2 or not all(0 < b <= 1 for b in args.budgets):
        parser.error("need --calib-images >= 4, --eval-images >= 2 and budgets in (0, 1]")
    return args


def budget_suite_parser(prog: str, description: str, *, name: str, fractions: str) -> argparse.ArgumentParser:
    """The command line of the one-model budget suites (`quant.latency`, `quant.mixed_goal`): the model, target,
    calibration / held-out image counts and the budgets as fractions of W8A8's bytes, beside `--out`/`--name`."""
    from benchmarks.cli import suite_parser

    parser = suite_parser(prog, description, name=name)
    parser.add_argument("--model", default="dinov2_s_focus")
    parser.add_argument("--target", default="executorch")
    parser.add_argument("--calib", type=int, default=8, help="calibration images")
    parser.add_argument("--held-out", type=int, default=8, help="held-out images")
    parser.add_argument("--fractions", default=fractions, help="budgets, fractions of W8A8's bytes on the target")
    return parser


def budget_subject(args: argparse.Namespace) -> tuple[Any, list[tuple[Any, ...]]]:
    """The budget suites' model with `--calib` calibration images, and its `--held-out` images as one-input
    batches; torch on 2 threads, as both suites measure."""
    import torch

    from benchmarks.suites.quant.subjects import loader

    torch.set_num_threads(2)
    subject = loader(args.model, 14, (args.calib, args.held_out), None)()
    return subject, [(x,) for x in subject.held_out]
