"""The harness on trivial callables: structure only (what is returned and written), never how fast."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from benchmarks.machine import describe_machine, energy_counters, gemm_gflops
from benchmarks.report import Table, eager_flops, json_safe, percent_of_peak, write_report
from benchmarks.timing import Stats, interleaved, set_threads, time_callable

STATS_KEYS = {"median_ms", "p10_ms", "p90_ms", "mean_ms", "n", "samples_ms"}


def test_time_callable_calls_warmup_plus_runs_and_summarises_runs_only() -> None:
    calls = []
    stats = time_callable(lambda: calls.append(1), warmup=2, runs=5)
    assert len(calls) == 7
    assert stats.n == 5 and len(stats.samples) == 5
    assert stats.p10 <= stats.median <= stats.p90
    assert set(stats.to_dict()) == STATS_KEYS


def test_interleaved_rotates_the_starting_peer_every_round() -> None:
    order: list[str] = []
    fns = {name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}
    stats = interleaved(fns, warmup=1, runs=3)
    assert {name: s.n for name, s in stats.items()} == {"a": 3, "b": 3, "c": 3}
    rounds = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_interleaved_reports_progress_per_timed_round_and_rejects_bad_counts() -> None:
    seen: list[int] = []
    interleaved({"x": lambda: None}, warmup=2, runs=4, on_round=seen.append)
    assert seen == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        interleaved({"x": lambda: None}, runs=0)
    with pytest.raises(ValueError):
        Stats.of([])


def test_set_threads_sets_and_reports_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1)["torch_intra_op"] == 1
        with pytest.raises(ValueError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_machine_description_has_the_fields_reports_rely_on() -> None:
    machine = describe_machine(distributions=("torch", "surely-not-installed-dist"))
    for key in ("cpu_model", "cores_available", "isa", "ram_gib", "os", "python", "versions", "load_average"):
        assert key in machine
    assert {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"} <= set(machine["isa"])
    assert machine["versions"]["surely-not-installed-dist"] == "not installed"
    assert len(machine["load_average"]) == 3
    json.dumps(machine, allow_nan=False)


def test_energy_is_not_measurable_without_counters_and_found_with_one(tmp_path) -> None:
    assert energy_counters(tmp_path)["measurable"] is False
    rapl = tmp_path / "class/powercap/intel-rapl:0/energy_uj"
    rapl.parent.mkdir(parents=True)
    rapl.write_text("123\n")
    found = energy_counters(tmp_path)
    assert found["measurable"] is True and found["counters"] == [str(rapl)]


def test_gemm_roof_structure() -> None:
    before = torch.get_num_threads()
    try:
        gemm = gemm_gflops(size=64, runs=2, threads=1)
    finally:
        torch.set_num_threads(before)
    assert gemm["threads"] == 1 and gemm["median_gflops"] > 0 and gemm["best_gflops"] >= gemm["median_gflops"]


def test_flops_of_a_linear_and_percent_of_peak() -> None:
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    assert eager_flops(lambda: layer(x)) == 2 * 3 * 8 * 4
    assert percent_of_peak(10**9, 0.5, 4.0) == pytest.approx(50.0)
    assert percent_of_peak(None, 0.5, 4.0) is None


def test_report_writes_strict_json_and_a_markdown_table(tmp_path) -> None:
    table = Table("Latency", ["unit", "median ms", "sqnr"], [["enc", 12.5, math.inf], ["dec|x", None, 3.0]], ["a note"])
    machine = describe_machine(distributions=("torch",))
    json_path, md_path = write_report(
        tmp_path / "out",
        "suite",
        title="T",
        machine=machine,
        tables=[table],
        summary=["goal met"],
        data={"stats": Stats.of([0.001, 0.002]).to_dict(), "shape": (1, 2)},
    )

    def reject(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    payload = json.loads(json_path.read_text(), parse_constant=reject)
    assert payload["tables"][0]["rows"][0] == ["enc", 12.5, "inf"]
    assert payload["data"]["shape"] == [1, 2] and payload["data"]["stats"]["n"] == 2
    assert payload["machine"]["cpu_model"] and payload["date"]
    md = md_path.read_text()
    assert "| unit | median ms | sqnr |" in md and "| enc | 12.5 | inf |" in md
    assert "dec\\|x" in md and "- goal met" in md and "- a note" in md
    assert json_safe({1: (math.nan,)}) == {"1": ["nan"]}
