"""The quantization suite's core on a tiny ViT: rows, schema, sane figures and the results file, never speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.machine import describe_machine
from benchmarks.report import write_report
from benchmarks.suites.quant import peers
from benchmarks.suites.quant.flags import parse_args
from benchmarks.suites.quant.goals import goals
from benchmarks.suites.quant.jobs import Job, run_job
from benchmarks.suites.quant.report import tables
from benchmarks.suites.quant.results import merge, run_record
from benchmarks.suites.quant.run import main, run_subject
from benchmarks.suites.quant.subjects import Subject, spread
from benchmarks.suites.quant.workspace import Workspace, module_outputs, score
from converters.unit import DeployUnit
from tests.quant.tiny_vit import image_batches, make_tiny_vit

ROW_KEYS = {"model", "origin", "method", "variant", "bits", "evaluated", "status"}
SCORE_KEYS = {"sqnr_db", "top1_agreement", "accuracy", "weight_bytes", "seconds"}


def tiny_subject() -> Subject:
    torch.manual_seed(0)
    model = make_tiny_vit()
    images = [x[:1] for x in image_batches(10, batch=1, seed=3)]
    with torch.no_grad():
        top2 = [model(x)[0].topk(2).values for x in images[6:]]
        # a draw whose top two fp32 logits are near-tied (one is 0.005 apart) flips under any 8-bit plan's noise
        held = [x for x, t in zip(images[6:], top2, strict=True) if t[0] - t[1] > 0.02]
        labels = torch.cat([model(x).argmax(-1) for x in held])
    unit = DeployUnit("model", model, (images[0],), ("image",), ("logits",))
    sources = {"calibration": "noise, seed 3", "held_out": "noise, seed 3 (other draws)"}
    return Subject("tiny_vit", unit, images[:6], held, labels, True, "random", sources)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    args = parse_args(
        [
            "--bits",
            "w8a8,w4a8",
            "--methods",
            "ptq",
            "--mixed-base",
            "ptq",
            "--deploy-methods",
            "ptq",
            "--peers",
            "ort",
            "--ort-calibrators",
            "MinMax",
            "--budgets",
            "0.75",  # counted as ONNX stores weights: uniform W4 g32 is already 60.4 % of W8A8 on this model
            "--targets",
            "onnx",
            "--deploy-bits",
            "w8a8,w4a8",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--calib-images",
            "4",
            "--threads",
            "1",
            "--work-threads",
            "1",
        ]
    )
    directory = tmp_path_factory.mktemp("quant-suite")
    return run_subject(tiny_subject(), ["uniform", "mixed", "deploy"], args, directory, log=directory / "log")


def by(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_uniform_rows_cover_ours_and_the_peer_at_every_bit_setting(result: dict[str, Any]) -> None:
    rows = result["sections"]["uniform"]["rows"]
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert {(r["method"], r["bits"]) for r in rows if r["origin"] == "ours"} == {("ptq", "W8A8"), ("ptq", "W4A8")}
    peer = [r for r in rows if r["origin"] == "peer"]
    assert {r["variant"] for r in peer} == {"MinMax, all ops", "MinMax, MatMul/Conv"}
    assert all(r["status"] == "ok" and SCORE_KEYS <= set(r) for r in rows), [r.get("error") for r in rows]


def test_figures_are_sane(result: dict[str, Any]) -> None:
    rows = result["sections"]["uniform"]["rows"]
    w8 = by(rows, method="ptq", bits="W8A8")
    w4 = by(rows, method="ptq", bits="W4A8")
    assert w8["sqnr_db"] > w4["sqnr_db"] > 0
    assert w8["weight_bytes"] == 2 * w4["weight_bytes"]
    assert 0.0 <= w4["top1_agreement"] <= w8["top1_agreement"] == 1.0
    assert w8["accuracy"] == 1.0  # the labels are the fp32 model's own predictions
    peer = by(rows, variant="MinMax, MatMul/Conv", bits="W8A8")
    assert 10.0 < peer["sqnr_db"] < 80.0


def test_mixed_precision_fits_its_budget(result: dict[str, Any]) -> None:
    (mixed,) = result["sections"]["mixed"]["rows"]
    assert mixed["status"] == "ok", mixed.get("error")
    assert mixed["weight_bytes"] <= 0.75 * mixed["w8a8_weight_bytes"]
    assert mixed["sqnr_db"] <= mixed["w8a8_sqnr_db"] + 1e-6


def test_deploy_scores_every_artifact_in_its_runtime_and_times_them(result: dict[str, Any]) -> None:
    rows = result["sections"]["deploy"]["rows"]
    w4 = by(rows, kind="artifact", origin="ours", bits="W4A8")
    assert w4["status"] == "ok", w4.get("error")  # onnx holds 4-bit weights (int8 QDQ at 4-bit levels here)
    artifacts = [r for r in rows if r["kind"] == "artifact" and r is not w4]
    assert {r["origin"] for r in artifacts} == {"fp32", "ours", "peer"}
    assert all(r["status"] == "ok" for r in artifacts), [r.get("error") for r in artifacts]
    assert by(artifacts, origin="fp32")["sqnr_db"] > 80.0
    ours = by(artifacts, origin="ours", method="ptq")
    fake = by(result["sections"]["uniform"]["rows"], method="ptq", bits="W8A8")
    assert abs(ours["sqnr_db"] - fake["sqnr_db"]) < 6.0  # the int8 ONNX computes what fake-quant simulated
    timing = by(rows, kind="timing")
    assert set(timing["stats"]) == {"eager fp32", w4["label"], *(r["label"] for r in artifacts)}
    assert all(s["n"] == 1 for s in timing["stats"].values())


def test_a_failing_method_becomes_a_row_not_a_crash() -> None:
    def boom() -> list[dict[str, Any]]:
        raise RuntimeError("peer crashed\nwith a second line")

    (row,) = run_job(Job("x", {"model": "m", "method": "peer"}, boom))
    assert row["status"] == "failed" and row["error"] == "RuntimeError: peer crashed with a second line"


def test_results_file_merges_runs_and_judges_the_goals(result: dict[str, Any], tmp_path: Path) -> None:
    earlier = {"other": {"subject": {**result["subject"], "name": "other"}, "sections": {"uniform": {"rows": []}}}}
    models = merge(earlier, {"dinov2_s_focus": result})
    assert set(models) == {"other", "dinov2_s_focus"}
    lines = goals(models)
    assert any(line.startswith("Goal, DINOv2-S static W8A8") and ("met" in line or "missed" in line) for line in lines)
    assert any(line.startswith("Goal, our static int8 ONNX faster") for line in lines)
    json_path, md_path = write_report(
        tmp_path, "quant", title="t", machine={}, tables=tables(models), data={"models": models}
    )
    payload = json.loads(json_path.read_text())
    assert [t["title"].split(" ")[0] for t in payload["tables"]] == ["Models", "Uniform", "Mixed", "Deployed"]
    assert "| tiny_vit | ours | ptq |" in md_path.read_text()


def test_the_xnnpack_peer_graph_is_flagged_for_eval_so_converters_take_it(tmp_path: Path) -> None:
    subject = tiny_subject()
    graph = peers.xnnpack_static(subject.model, subject.calib[0], subject.calib, 8, 8)
    assert not graph.training
    ws = Workspace(subject, tmp_path, parse_args([]))
    assert score(ws, module_outputs(graph, subject.held_out))["sqnr_db"] > 15.0


def test_report_only_retabulates_a_results_file(result: dict[str, Any], tmp_path: Path) -> None:
    args = parse_args(["--models", "tiny_vit", "--threads", "1"])
    machine = describe_machine(())
    runs = [run_record(args, 0.0, machine)]
    write_report(
        tmp_path, "quant", title="t", machine=machine, tables=[], data={"models": {"tiny_vit": result}, "runs": runs}
    )
    assert main(["--report-only", "--out", str(tmp_path / "quant")]) == 0
    payload = json.loads((tmp_path / "quant.json").read_text())
    assert payload["data"]["runs"] == json.loads(json.dumps(runs)) and len(payload["tables"]) == 4
    assert "| tiny_vit | 1 | eager |" in (tmp_path / "quant.md").read_text()


def test_merge_replaces_only_the_methods_measured_again() -> None:
    ptq8, ort8 = (
        {"origin": "ours", "method": "ptq", "bits": "W8A8"},
        {"origin": "peer", "method": "ort", "bits": "W8A8"},
    )
    old = {"m": {"subject": {}, "sections": {"uniform": {"rows": [ptq8, ort8], "seconds": 1.0}}}}
    ptq4 = {"origin": "ours", "method": "ptq", "bits": "W4A8"}
    new = {"m": {"subject": {}, "sections": {"uniform": {"rows": [ptq4], "seconds": 2.0}, "deploy": {"rows": []}}}}
    merged = merge(old, new)["m"]["sections"]
    assert merged["uniform"]["rows"] == [ort8, ptq4]
    assert merged["deploy"] == {"rows": []}


def test_parse_args_reads_bit_settings_and_rejects_unknown_names() -> None:
    args = parse_args(["--bits", "w8a8,W4A8", "--budgets", "0.5"])
    assert args.bits == [(8, 8), (4, 8)] and args.budgets == [0.5]
    with pytest.raises(SystemExit):
        parse_args(["--peers", "tensorrt"])


def test_spread_keeps_both_ends() -> None:
    assert spread(list(range(10)), 3) == [0, 4, 9] or spread(list(range(10)), 3) == [0, 5, 9]
    assert spread([1, 2], 5) == [1, 2]
