"""The `mixed` section: greedy mixed precision under weight-byte budgets, beside the base's uniform W8A8."""

from __future__ import annotations

from typing import Any

from benchmarks.suites.quant import ours
from benchmarks.suites.quant.jobs import Job, row
from benchmarks.suites.quant.workspace import Workspace, module_outputs, score


def mixed_jobs(ws: Workspace) -> list[Job]:
    """Greedy mixed precision at each budget on each base, beside the same prepared model's uniform W8A8 plan."""
    return [_mixed_job(ws, method) for method in ws.args.mixed_base]


def _mixed_job(ws: Workspace, method: str) -> Job:
    base = {"model": ws.subject.name, "origin": "ours", "method": f"{method} + greedy MP", "bits": "mixed"}
    base["evaluated"] = "fake-quant (torch)"

    def run() -> list[dict[str, Any]]:
        from quant.fake_quant import apply_plan

        w8 = ws.fake_quant_scores(method, 8, 8)
        prepared = ws.prepared(method, (8, 8))
        plans, table_seconds = ours.mixed_plans(prepared, ws.subject.calib, ws.args.budgets)
        rows = []
        for fraction, plan in plans.items():
            outputs = module_outputs(apply_plan(prepared.module, plan), ws.subject.held_out)
            rows.append(
                row(
                    base,
                    **score(ws, outputs),
                    variant=f"budget {fraction:.0%} of W8A8 weights",
                    budget_fraction=fraction,
                    weight_bytes=plan.weight_bytes(),
                    w8a8_weight_bytes=w8["weight_bytes"],
                    w8a8_sqnr_db=w8["sqnr_db"],
                    weight_bits=plan.summary()["weight_bits"],
                    predicted_sqnr_db=plan.metadata.get("predicted_sqnr_db"),
                    sensitivity_seconds=round(table_seconds, 1),
                    note=ours.MIXED_NOTES[method],
                )
            )
        return rows

    return Job(f"{method} mixed precision ({len(ws.args.budgets)} budgets)", base, run)
