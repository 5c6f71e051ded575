"""`edgevit report` from real bench results: one HTML page that parses, loads nothing from elsewhere and has a
plot with data points for each figure; report.json and report.md beside it; bad results refused in one line;
and the page as a browser shows it: Debian's chromium (installed by the README's test command) driven headless
through playwright.
"""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from benchmarks.bench import BenchSettings, bench_bundle
from benchmarks.energy import joules_per_inference
from benchmarks.html import build_report, render_html
from converters.bundle import read_manifest
from edgevit.bundle import write_bundle
from edgevit.data.bench_inputs import bench_inputs
from edgevit.models import create
from tests.test_cli import run

TRACKER_FPS = Path(__file__).parents[2] / "benchmarks" / "results" / "tracker_fps.json"  # the suite's real output


@pytest.fixture(scope="module")
def mixed_results_file(tmp_path_factory) -> Path:
    """Bench results of a mixed-precision (MPTQ) Core ML bundle of a one-block ViT at 32 px: its plan searched
    under a weight budget, so every layer has a measured sensitivity (Core ML does not run here: no timing)."""
    from benchmarks.report import json_safe
    from edgevit.pipeline import QuantConfig, Recipe, run_model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("mixed")
    model = create("vit_ti16_224", depth=1, img_size=32, num_classes=10)
    recipe = Recipe(model="vit", variant="ti16_224", targets=("coreml",), passes=(QuantConfig("mptq", "mixed", 0.4),))
    run_model(model, recipe, out=root / "bundle")
    inputs, note = bench_inputs(read_manifest(root / "bundle"))
    results = bench_bundle(root / "bundle", inputs, note, BenchSettings(runs=3, warmup=1, threads=1))
    path = root / "mixed.json"
    path.write_text(json.dumps(json_safe(results)))
    return path


@pytest.fixture(scope="module")
def results_file(tmp_path_factory) -> Path:
    """Results of a real bench (onnx and Core ML artifacts of a one-block ViT at 32 px) written as bench does."""
    from benchmarks.report import json_safe

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("report")
    bundle = root / "bundle"
    write_bundle(create("vit_ti16_224", depth=1, img_size=32, num_classes=10), ("onnx", "coreml"), None, bundle)
    inputs, note = bench_inputs(read_manifest(bundle))
    results = bench_bundle(bundle, inputs, note, BenchSettings(runs=3, warmup=1, threads=1))
    path = root / "results.json"
    path.write_text(json.dumps(json_safe(results)))
    return path


class Page(HTMLParser):
    """Tags, attribute values and the ids inside each <svg> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.values: list[str] = []
        self.svg_ids: list[list[str]] = []
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.values += [v or "" for _, v in attrs]
        if tag == "svg":
            self.svg_ids.append([])
            self.depth += 1
        elif self.depth:
            self.svg_ids[-1] += [v for k, v in attrs if k == "id" and v]

    def handle_endtag(self, tag):
        if tag == "svg":
            self.depth -= 1


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_report_is_one_self_contained_page_with_data_in_every_plot(results_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "site" / "report.html"
    code, stdout, err = run(monkeypatch, capsys, "report", str(results_file), "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html", "report.json", "report.md"]
    text = out.read_text()
    page = parse(text)
    assert page.tags.count("svg") == 2  # latency, fidelity vs size (no energy plot: nothing was metered)
    latency, fidelity = page.svg_ids
    assert [i for i in latency if i.startswith("latency-point-")] == ["latency-point-0"]  # onnx ran, Core ML not
    assert sum(i.startswith("fidelity-point-") for i in fidelity) >= 1
    assert not {"script", "link", "img", "iframe"} & set(page.tags)
    assert "://" not in text and not any(v.startswith(("http", "//")) for v in page.values)
    assert "not measured" in text and "not run here (needs macOS)" in text
    report = json.loads((out.parent / "report.json").read_text())
    assert report["schema"] == "edgevit.report" and report["plots"]["latency"][0]["median_ms"] > 0
    assert "| artifact |" in (out.parent / "report.md").read_text()


def test_energy_plot_appears_when_a_meter_measured(results_file):
    results = json.loads(results_file.read_text())
    metered = copy.deepcopy(results)
    row = next(r for r in metered["rows"] if r["status"] == "ok")
    row["energy"] = {"meter": "RAPL package-0", **joules_per_inference(2.0, 1.0, 10.0, 2.0, 100)}
    metered["energy"] = {"measured": True, "meters": ["RAPL package-0"]}
    page = parse(render_html(build_report([(results_file, metered)])))
    assert page.tags.count("svg") == 3 and "energy-point-0" in page.svg_ids[2]


def test_a_newer_results_schema_is_one_line(results_file, tmp_path, monkeypatch, capsys):
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**json.loads(results_file.read_text()), "schema_version": 2}))
    out = tmp_path / "report.html"
    code, _, err = run(monkeypatch, capsys, "report", str(newer), "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1 and "newer results schema" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.json"]


def test_existing_report_needs_force(results_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.html"
    (tmp_path / "report.md").write_text("mine")
    code, _, err = run(monkeypatch, capsys, "report", str(results_file), "--out", str(out))
    assert code == 2 and "already exists" in err and len(err.splitlines()) == 1
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["report.md"] and (tmp_path / "report.md").read_text() == "mine"
    )
    code, _, _ = run(monkeypatch, capsys, "report", str(results_file), "--out", str(out), "--force")
    assert code == 0 and (tmp_path / "report.md").read_text() != "mine"


def test_latency_plot_takes_rows_without_samples_and_spans_orders_of_magnitude() -> None:
    from benchmarks.html_plots import latency_plot

    svg = latency_plot(
        [
            {"label": "adb mean only", "median_ms": 0.3, "p10_ms": None, "p90_ms": None},  # benchmark_model's row
            {"label": "local", "median_ms": 70.0, "p10_ms": 65.0, "p90_ms": 80.0},
        ]
    )
    assert 'id="latency-point-0"' in svg and 'id="latency-point-1"' in svg
    assert "log scale" in svg  # 0.3 ms beside 70 ms would be a hairline on a linear axis


CHROMIUM = Path("/usr/bin/chromium")  # Debian's, as the README's test command installs it


def test_the_page_renders_in_headless_chromium_with_data_in_every_plot_and_no_console_errors(
    results_file, mixed_results_file, tmp_path, monkeypatch, capsys
):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: install Debian's chromium (see the README's test command)"
    out = tmp_path / "report.html"
    inputs = [str(results_file), str(mixed_results_file), str(TRACKER_FPS)]
    code, _, err = run(monkeypatch, capsys, "report", *inputs, "--out", str(out))
    assert code == 0, err
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on(
                "console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(out.as_uri(), wait_until="load")
            plots = page.evaluate(
                """() => Array.from(document.querySelectorAll('svg')).map(svg => ({
                    width: svg.getBoundingClientRect().width,
                    points: Array.from(svg.querySelectorAll('[id*="-point-"]'))
                        .filter(p => { const r = p.getBoundingClientRect(); return r.width > 0 && r.height > 0; })
                        .length,
                }))"""
            )
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    # latency, fidelity vs size, tracker FPS, mixed-precision sensitivity: each drawn with visible points
    assert len(plots) == 4 and all(p["width"] > 200 and p["points"] >= 1 for p in plots), plots
    assert (tmp_path / "report.png").stat().st_size > 10_000  # something was drawn


def test_sensitivity_table_and_tracker_fps_in_every_format(mixed_results_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.html"
    code, stdout, err = run(monkeypatch, capsys, "report", str(mixed_results_file), str(TRACKER_FPS), "--out", str(out))
    assert code == 0, err
    report = json.loads(out.with_suffix(".json").read_text())
    (unit,) = report["results"][0]["quant"]["units"]
    assert report["results"][0]["quant"]["bits"] == "mixed" and unit["sensitivity"] is True
    bits = {layer["weight_bits"] for layer in unit["layers"] if layer["weight_bits"]}
    assert len(bits) > 1  # the budget forced some layers below 8 bits
    assert all(layer["sqnr_db"] is not None and layer["why"] for layer in unit["layers"])
    points = report["plots"]["sensitivity"]
    assert [p["label"] for p in points] == [f"model/{layer['layer']}" for layer in unit["layers"]]
    suite = json.loads(TRACKER_FPS.read_text())
    runs = report["plots"]["tracker_fps"]
    assert len(runs) == sum(len(v["trackers"]) for v in suite["data"]["variants"])
    first = suite["data"]["variants"][0]
    trackers = list(first["trackers"].items())
    # the official predictor is timed per frame only (units None): its run has no split; ours are split
    assert any(t["profile"]["units"]["memory_attention"] is None for _, t in trackers)
    at = next(i for i, (_, t) in enumerate(trackers) if t["profile"]["units"]["memory_attention"] is not None)
    name, tracker = trackers[at]
    assert runs[at]["label"] == f"{first['variant']} · {name}" and runs[at]["fps"] == tracker["profile"]["fps"]
    assert runs[at]["units_ms"]["memory_attention"] == tracker["profile"]["units"]["memory_attention"]["median_ms"]
    page = parse(out.read_text())
    ids = [i for svg in page.svg_ids for i in svg]
    assert sum(i.startswith("sensitivity-point-") for i in ids) == len(points)
    assert sum(i.startswith(f"tracker-point-{at}-") for i in ids) == len(runs[at]["units_ms"])
    md = out.with_suffix(".md").read_text()
    assert "# Tracker FPS" in md and "Quantization plan, model (mptq, bits mixed)" in md and "SQNR dB alone" in md
    assert f"{len(runs)} tracker runs" in stdout


def test_a_track_profile_summary_is_a_tracker_run(tmp_path):
    from benchmarks.tracker_runs import is_tracker_file, tracker_runs

    suite = json.loads(TRACKER_FPS.read_text())
    profile = suite["data"]["variants"][0]["trackers"]["onnx fp32"]["profile"]
    summary = {
        "video": "bikes.mp4",
        "frames": 5,
        "model": "efficienttam_ti_512",
        "runtime": "onnx",
        "weights": "random",
        "profile": profile,
    }  # the fields `edgevit track --profile --json` prints
    assert is_tracker_file(summary) and is_tracker_file(suite) and not is_tracker_file({"schema": "edgevit.bench"})
    (one,) = tracker_runs(tmp_path / "t.json", summary)
    assert one["label"] == "efficienttam_ti_512 · onnx" and one["fps"] == profile["fps"]
    assert sum(one["units_ms"].values()) == pytest.approx(
        sum(profile["units"][p]["median_ms"] for p in profile["units"]), rel=1e-9
    )
