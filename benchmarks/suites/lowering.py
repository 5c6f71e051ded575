"""Lowering suite: every EfficientTAM deploy unit converted to every target, then timed against eager PyTorch.

Suites are the runnable comparisons that sit on top of the harness. The harness (`benchmarks.timing`,
`benchmarks.machine`, `benchmarks.report`) stays free of model code, as `benchmarks/` is a leaf; a suite
has to build the models it measures, so this one imports `edgevit.models` — inside `run_model` only, so
that importing the module (for `--help`, or for its helpers) costs no model code.

One run does, per model: a tiny warm-up conversion per target (backend imports, first-call caches —
reported apart, as a fresh `edgevit convert` process pays it once), the conversion of each unit with its
parity check against eager, then per unit the eager module and every artifact that can run here, timed
side by side (`benchmarks.timing.interleaved`) with the same thread count. Core ML converts but cannot run
off macOS; its rows say so instead of showing a time. The fp32 GEMM roof is measured at the start and the
end of the run and the higher median is used, so "% of peak" is never flattered by a roof taken under load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from benchmarks.machine import describe_machine, gemm_gflops, load_average
from benchmarks.report import Table, eager_flops, gflops_per_second, percent_of_peak, print_tables, write_report
from benchmarks.timing import Stats, interleaved, set_threads
from converters import TARGETS, Artifact, ConversionError, DeployUnit, RuntimeUnavailableError, convert, load_runner

UNITS = ("image_encoder", "memory_attention", "prompt_mask_decoder", "memory_encoder")
# The goals, judged in the summary.
CONVERSION_BUDGET_S = 120.0
EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.lowering --models efficienttam_ti_512,efficienttam_s_512 "
    "--targets onnx,executorch,tflite,coreml --runs 20 --threads 2 --out benchmarks/results/"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suites.lowering",
        description="Convert EfficientTAM's deploy units to each target and time every runnable artifact "
        "against eager PyTorch, side by side; writes NAME.json and NAME.md under --out.",
        epilog=f"example (a quick run: --models efficienttam_ti_512 --units image_encoder --runs 5):\n  {EXAMPLE}\n\n"
        "On cores shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE in the environment: PyTorch's\n"
        "spin-waiting OpenMP threads otherwise make eager 3-30x slower on 2 threads than on 1 (recorded in the JSON).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", default="efficienttam_ti_512,efficienttam_s_512", help="comma-separated")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--units", default=",".join(UNITS), help="comma-separated deploy unit names")
    parser.add_argument("--precision", default="fp32", help="precision for every target (default fp32)")
    parser.add_argument("--runs", type=int, default=20, help="timed rounds per unit (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds per unit first (default 3)")
    parser.add_argument(
        "--threads",
        default="2",
        help="thread count(s) for torch and every runtime, comma-separated to time each (default 2)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where results go")
    parser.add_argument("--name", default="lowering", help="results file stem (default lowering)")
    parser.add_argument("--keep-artifacts", type=Path, default=None, help="keep converted files here")
    parser.add_argument(
        "--show-backend-output", action="store_true", help="let converters print (default: to a log file)"
    )
    args = parser.parse_args(argv)
    args.models = _split(args.models)
    args.targets = _split(args.targets)
    args.units = _split(args.units)
    try:
        args.threads = [int(t) for t in _split(args.threads)]
    except ValueError:
        parser.error(f"--threads takes integers, got {args.threads!r}")
    if unknown := [t for t in args.targets if t not in TARGETS]:
        parser.error(f"unknown target(s) {', '.join(unknown)}; valid: {', '.join(TARGETS)}")
    if unknown := [u for u in args.units if u not in UNITS]:
        parser.error(f"unknown unit(s) {', '.join(unknown)}; valid: {', '.join(UNITS)}")
    if args.runs < 1 or args.warmup < 0 or not args.threads or min(args.threads) < 1:
        parser.error("need --runs >= 1, --warmup >= 0, --threads >= 1")
    return args


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


@contextlib.contextmanager
def backend_output_to(log: Path | None) -> Iterator[None]:
    """Send file descriptors 1 and 2 to `log` (None: leave them alone).

    Converters print progress bars, deprecation warnings and, from C++, cpuinfo complaints straight to the
    descriptors, which would shred the progress display; redirecting the descriptors (not just sys.stdout)
    catches the C++ output too. The console writes to its own duplicate of the original stdout.
    """
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def warm_up_target(target: str, precision: str, out_dir: Path) -> float:
    """Seconds to convert a one-layer unit: the backend's imports and first-call set-up, paid once a process."""
    gen = torch.Generator().manual_seed(0)
    unit = DeployUnit(
        "warmup", nn.Sequential(nn.Linear(8, 8), nn.GELU()).eval(), (torch.randn(1, 8, generator=gen),), ("x",), ("y",)
    )
    start = time.perf_counter()
    convert(unit, target, precision, out_dir)
    return time.perf_counter() - start


def conversion_record(unit: DeployUnit, target: str, precision: str, out_dir: Path) -> dict[str, Any]:
    """Convert one unit and summarise the outcome; a failure is a result to report, not a reason to stop."""
    start = time.perf_counter()
    try:
        artifact = convert(unit, target, precision, out_dir)
    except ConversionError as exc:
        return {"status": "failed", "error": str(exc), "wall_s": time.perf_counter() - start}
    return {
        "status": "ok",
        "wall_s": time.perf_counter() - start,
        **_artifact_summary(artifact),
    }


def _artifact_summary(a: Artifact) -> dict[str, Any]:
    sqnr = None if a.parity is None else {k: v.sqnr_db for k, v in a.parity.items()}
    return {
        "path": str(a.path),
        "precision": a.precision,
        "conversion_s": a.conversion_seconds,
        "size_mb": a.size_bytes / 1e6,
        "sqnr_db": sqnr,
        "min_sqnr_db": None if sqnr is None else min(sqnr.values()),
        "max_abs_diff": None if a.parity is None else max(v.max_abs_diff for v in a.parity.values()),
        "parity_note": a.parity_note,
        "facts": {k: v for k, v in a.facts.items() if k not in ("onnx_ops", "tflite_ops", "mil_ops")},
    }


def time_unit(
    unit: DeployUnit,
    records: dict[str, dict[str, Any]],
    threads: int,
    warmup: int,
    runs: int,
    on_round: Callable[[int], None] | None = None,
) -> tuple[dict[str, Stats], dict[str, str], dict[str, int]]:
    """Eager and every runnable artifact of `unit`, interleaved, all on `threads` threads; returns the stats,
    why a target did not run, and the thread count each peer reports (torch's, each runner's)."""
    arrays = tuple(x.detach().cpu().numpy() for x in unit.example_inputs)
    fns: dict[str, Callable[[], Any]] = {"eager": lambda: unit.run_eager(*unit.example_inputs)}
    skipped: dict[str, str] = {}
    used: dict[str, int] = {}
    for target, rec in records.items():
        if rec["status"] != "ok":
            continue
        try:
            runner = load_runner(target, Path(rec["path"]), num_threads=threads)
        except RuntimeUnavailableError as exc:
            skipped[target] = str(exc)
            continue
        fns[target] = lambda r=runner: r.run(*arrays)
        used[target] = runner.num_threads
    used["eager"] = set_threads(threads)["torch_intra_op"]  # after loading the runners: none can change it now
    return interleaved(fns, warmup=warmup, runs=runs, on_round=on_round), skipped, used


def run_model(
    name: str,
    args: argparse.Namespace,
    art_root: Path,
    log: Path | None,
    progress: Progress,
) -> dict[str, Any]:
    """Everything the suite measures for one model, as plain data."""
    import edgevit.models

    torch.manual_seed(0)
    model = edgevit.models.create(name).eval()
    units = [u for u in model.deploy_units() if u.name in args.units]
    flops = {u.name: eager_flops(lambda u=u: u.run_eager(*u.example_inputs)) for u in units}
    params = {u.name: sum(p.numel() for p in u.module.parameters()) for u in units}

    task = progress.add_task(f"{name}: convert", total=len(args.targets) * (len(units) + 1))
    warmups: dict[str, float | str] = {}
    conversions: dict[str, dict[str, dict[str, Any]]] = {u.name: {} for u in units}
    for target in args.targets:
        out_dir = art_root / name / target
        progress.update(task, description=f"{name}: {target} warm-up")
        with backend_output_to(log):
            try:
                warmups[target] = warm_up_target(target, args.precision, out_dir)
            except ConversionError as exc:
                warmups[target] = f"failed: {exc}"
        progress.advance(task)
        for unit in units:
            progress.update(task, description=f"{name}: {target} {unit.name}")
            with backend_output_to(log):
                conversions[unit.name][target] = conversion_record(unit, target, args.precision, out_dir)
            progress.advance(task)

    timings: dict[str, dict[str, Any]] = {u.name: {} for u in units}
    for threads in args.threads:
        for unit in units:
            task = progress.add_task(f"{name}: time {unit.name}, {threads} thread(s)", total=args.runs)
            load_before = load_average()
            with backend_output_to(log):
                stats, skipped, used = time_unit(
                    unit,
                    conversions[unit.name],
                    threads,
                    args.warmup,
                    args.runs,
                    lambda _, t=task: progress.advance(t),
                )
            timings[unit.name][threads] = {
                "stats": {k: v.to_dict() for k, v in stats.items()},
                "not_run": skipped,
                "threads_used": used,
                "load_average_before": load_before,
                "load_average_after": load_average(),
            }
    return {
        "model": name,
        "units": [u.name for u in units],
        "flops": flops,
        "parameters": params,
        "backend_warmup_s": warmups,
        "conversions": conversions,
        "timings": timings,
    }


def latency_table(results: list[dict[str, Any]], peaks: dict[int, float], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Latency per unit (median of {args.runs} interleaved runs after {args.warmup} warm-up rounds)",
        columns=[
            "model",
            "unit",
            "threads",
            "target",
            "convert s",
            "median ms",
            "p10–p90 ms",
            "× eager",
            "GFLOP",
            "GFLOP/s",
            "% peak",
            "min SQNR dB",
            "load 1 min",
            "note",
        ],
    )
    for res in results:
        for unit in res["units"]:
            flops = res["flops"][unit]
            for threads, timing in res["timings"][unit].items():
                eager = timing["stats"]["eager"]
                load = max(timing["load_average_before"][0], timing["load_average_after"][0])
                common = (res["model"], unit, threads, flops, peaks[threads], load, eager)
                table.rows.append(_latency_row(*common, "eager (PyTorch)", None, eager, None, ""))
                for target, rec in res["conversions"][unit].items():
                    stats = timing["stats"].get(target)
                    if rec["status"] != "ok":
                        note = f"conversion failed: {rec['error']}"
                    elif stats is None:
                        note = f"converts; cannot run here ({timing['not_run'].get(target, 'no runtime')})"
                    else:
                        note = _facts_note(target, rec["facts"])
                    label = _runtime_label(target)
                    table.rows.append(
                        _latency_row(*common, label, rec.get("conversion_s"), stats, rec.get("min_sqnr_db"), note)
                    )
    table.notes = [
        "convert s: lowering + writing + loading the file back (the artifact's conversion_seconds), after a "
        "warm-up conversion of a one-layer unit; parity is not included.",
        "× eager: median over the eager median measured in the same interleaved rounds; below 1 is faster.",
        "GFLOP: matmul/conv/attention FLOPs counted by torch's FlopCounterMode on eager (elementwise ops not "
        "counted); % peak: that rate over the fp32 GEMM roof measured in this run at the same thread count ("
        + ", ".join(f"{t} thread(s): {p:.0f} GFLOP/s" for t, p in peaks.items())
        + ").",
        "min SQNR: the lowest over the unit's outputs, artifact vs eager on the unit's example inputs (inf: "
        "bit-equal). Random weights: latency does not depend on them, parity figures only loosely.",
        "load 1 min: the higher 1-minute load average read before and after the unit's rounds; above the "
        "core count the cores were shared with other jobs while timing.",
        "Runner times include copying numpy inputs in and outputs out, as an app pays; eager gets tensors.",
    ]
    return table


def _runtime_label(target: str) -> str:
    return {
        "onnx": "onnx (onnxruntime CPU)",
        "executorch": "executorch (XNNPACK)",
        "tflite": "tflite (LiteRT XNNPACK)",
        "coreml": "coreml",
    }.get(target, target)


def _latency_row(
    model: str,
    unit: str,
    threads: int,
    flops: int,
    peak: float,
    load: float,
    eager: dict[str, Any],
    label: str,
    convert_s: float | None,
    stats: dict[str, Any] | None,
    sqnr: float | None,
    note: str,
) -> list[Any]:
    median_s = None if stats is None else stats["median_ms"] / 1e3
    rate = gflops_per_second(flops, median_s)
    pct = percent_of_peak(flops, median_s, peak)
    return [
        model,
        unit,
        threads,
        label,
        None if convert_s is None else round(convert_s, 1),
        None if stats is None else round(stats["median_ms"], 1),
        None if stats is None else f"{stats['p10_ms']:.1f}–{stats['p90_ms']:.1f}",
        None if stats is None else round(stats["median_ms"] / eager["median_ms"], 2),
        round(flops / 1e9, 2),
        None if rate is None else round(rate, 1),
        None if pct is None else round(pct, 1),
        None if sqnr is None else round(sqnr, 1),
        load,
        note,
    ]


def _facts_note(target: str, facts: dict[str, Any]) -> str:
    if target != "executorch":
        return ""
    ops = sorted(facts.get("undelegated_ops", {}).items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{op}×{n}" for op, n in ops[:4])
    more = f", +{len(ops) - 4} kinds" if len(ops) > 4 else ""
    return (
        f"{facts.get('delegated_subgraphs')} XNNPACK subgraphs; {facts.get('undelegated_nodes', 0)} nodes "
        f"undelegated{': ' + shown + more if ops else ''}"
    )


def conversion_table(results: list[dict[str, Any]]) -> Table:
    table = Table(
        title=f"Conversion per target (goal: one target under {CONVERSION_BUDGET_S:.0f} s)",
        columns=[
            "model",
            "target",
            "units ok",
            "warm-up s",
            "convert s (sum)",
            "with parity s",
            "slowest unit",
            f"fresh process s (goal < {CONVERSION_BUDGET_S:.0f})",
            "goal",
        ],
        notes=[
            "warm-up s: a one-layer unit converted first (backend imports, first-call set-up); only the first "
            "model's is cold, later models find the backend imported.",
            "fresh process s: the first (cold) warm-up + every unit's conversion with its parity check — what "
            "one `convert` run for this target costs, less building the model.",
        ],
    )
    for res in results:
        for target, total in _per_target(res, results[0]["backend_warmup_s"]).items():
            table.rows.append(
                [
                    res["model"],
                    target,
                    f"{total['ok']}/{total['units']}",
                    _round(total["warmup_s"]),
                    round(total["convert_s"], 1),
                    round(total["wall_s"], 1),
                    f"{total['slowest']} {total['slowest_s']:.1f} s",
                    round(total["fresh_s"], 1),
                    total["goal"],
                ]
            )
    return table


def _round(x: float | str) -> float | str:
    return round(x, 1) if isinstance(x, float) else x


def _per_target(res: dict[str, Any], cold_warmups: dict[str, float | str]) -> dict[str, dict[str, Any]]:
    """Per target: units converted, times summed, and the conversion goal judged on a fresh process's cost
    (`cold_warmups`: the warm-ups of the run's first model, when the backends were not imported yet)."""
    out = {}
    for target, warm in res["backend_warmup_s"].items():
        cold = cold_warmups.get(target, warm)
        recs = {u: res["conversions"][u][target] for u in res["units"]}
        ok = [r for r in recs.values() if r["status"] == "ok"]
        slowest = max(recs, key=lambda u: recs[u]["wall_s"])
        wall = sum(r["wall_s"] for r in recs.values())
        fresh = wall + (cold if isinstance(cold, float) else 0.0)
        partial = "" if len(recs) == len(UNITS) else f" ({len(recs)} of {len(UNITS)} units)"
        if not isinstance(warm, float):
            goal = "missed: even a one-layer unit does not convert"
        elif len(ok) < len(recs):
            goal = f"missed: {len(recs) - len(ok)} of {len(recs)} units do not convert"
        elif fresh < CONVERSION_BUDGET_S:
            goal = f"met by {CONVERSION_BUDGET_S - fresh:.0f} s{partial}"
        else:
            goal = f"missed by {fresh - CONVERSION_BUDGET_S:.0f} s{partial}"
        out[target] = {
            "units": len(recs),
            "ok": len(ok),
            "warmup_s": warm,
            "convert_s": sum(r.get("conversion_s", 0.0) for r in ok),
            "wall_s": wall,
            "fresh_s": fresh,
            "slowest": slowest,
            "slowest_s": recs[slowest]["wall_s"],
            "goal": goal,
        }
    return out


def goals(results: list[dict[str, Any]]) -> list[str]:
    """The issue's two goals, judged per model (and per thread count for latency) with the margin."""
    lines = []
    for res in results:
        model = res["model"]
        for threads, timing in res["timings"].get("image_encoder", {}).items():
            stats = timing["stats"]
            eager = stats["eager"]["median_ms"]
            ran = {t: s["median_ms"] for t, s in stats.items() if t != "eager"}
            where = f"{model} image encoder at or below eager ({threads} thread(s))"
            if not ran:
                lines.append(f"{where}: no artifact ran — missed.")
                continue
            best = min(ran, key=ran.get)
            ratio = ran[best] / eager
            verdict = (
                f"met, {100 * (1 - ratio):.0f} % below eager"
                if ratio <= 1.0
                else f"missed, {100 * (ratio - 1):.0f} % above eager"
            )
            lines.append(
                f"{where}: best artifact {best} {ran[best]:.1f} ms vs eager {eager:.1f} ms ({ratio:.2f}×) — {verdict}."
            )
        per_target = _per_target(res, results[0]["backend_warmup_s"])
        if per_target:
            best = min(per_target, key=lambda t: per_target[t]["fresh_s"])
            lines.append(
                f"{model} conversion of one target under {CONVERSION_BUDGET_S:.0f} s: "
                + "; ".join(f"{t} {v['fresh_s']:.0f} s ({v['goal']})" for t, v in per_target.items())
                + f" — fastest {best}."
            )
    return lines


def _threading_warning(threads: list[int]) -> list[str]:
    policy = os.environ.get("OMP_WAIT_POLICY")
    if max(threads) < 2 or (policy or "").upper() == "PASSIVE":
        return [f"OMP_WAIT_POLICY={policy or 'unset'}."]
    return [
        f"OMP_WAIT_POLICY={policy or 'unset'}: eager PyTorch's OpenMP threads spin-wait, and on shared cores its "
        "multi-thread figures measure the contention more than the model; rerun with OMP_WAIT_POLICY=PASSIVE."
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The console keeps its own copy of stdout so backend output can be sent to the log underneath it; off a
    # terminal (a log file, CI) it is made wide enough that the tables do not fold into columns of letters.
    out = os.fdopen(os.dup(1), "w")
    console = Console(file=out, width=None if out.isatty() else 220)
    art_root = args.keep_artifacts or Path(tempfile.mkdtemp(prefix="edgevit-lowering-"))
    log = None if args.show_backend_output else Path(tempfile.gettempdir()) / f"edgevit-{args.name}-{os.getpid()}.log"
    gemm_start = {t: gemm_gflops(threads=t) for t in args.threads}
    machine = describe_machine()
    console.print(
        "fp32 GEMM roof at start: "
        + ", ".join(f"{t} thread(s) {g['median_gflops']} GFLOP/s" for t, g in gemm_start.items())
        + f"; load {machine['load_average']}"
    )
    if log:
        console.print(f"backend output goes to {log}", style="dim")

    results = []
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as progress:
            for name in args.models:
                results.append(run_model(name, args, art_root, log, progress))
    finally:
        if args.keep_artifacts is None:
            shutil.rmtree(art_root, ignore_errors=True)
    gemm_end = {t: gemm_gflops(threads=t) for t in args.threads}
    roofs = {t: max(gemm_start[t], gemm_end[t], key=lambda g: g["median_gflops"]) for t in args.threads}
    machine["gemm_fp32"] = roofs[max(args.threads)]
    peaks = {t: g["median_gflops"] for t, g in roofs.items()}

    tables = [conversion_table(results), latency_table(results, peaks, args)]
    summary = [
        *goals(results),
        f"Threads timed: {', '.join(map(str, args.threads))}; torch, each runner and ExecuTorch's process-wide "
        f"pool set to the same count. {args.runs} timed rounds after {args.warmup} "
        "warm-up rounds, peers interleaved round-robin with a rotating start.",
        "fp32 GEMM roof (median GFLOP/s, start → end of run): "
        + "; ".join(
            f"{t} thread(s) {gemm_start[t]['median_gflops']} → {gemm_end[t]['median_gflops']}" for t in args.threads
        )
        + f"; load {machine['load_average']} → {load_average()}. % peak uses the higher of the two.",
        "Core ML converts here but its prediction needs macOS: its rows have a conversion time and no latency.",
        *_threading_warning(args.threads),
        f"Whole run {time.perf_counter() - started:.0f} s; weights random (no checkpoint ships in any package).",
    ]
    data = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "gemm_fp32": {"start": gemm_start, "end": gemm_end},
        "models": results,
    }
    json_path, md_path = write_report(
        args.out,
        args.name,
        title="Lowering: EfficientTAM units, converted and timed against eager PyTorch",
        machine=machine,
        tables=tables,
        summary=summary,
        data=data,
    )
    print_tables(tables, console)
    for line in summary:
        console.print(f"• {line}")
    console.print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
