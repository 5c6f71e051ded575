"""The `mixed` section: greedy mixed precision under weight-byte budgets, beside the base's uniform W8A8.

Budgets count what the targets store (`quant.cost`, the dearest of them), as `edgevit quantize --bits mixed
--budget-mb` does; the targets are the deploy targets that lower group-wise 4-bit weights (a target that keeps
4-bit weights in int8 storage saves nothing, so no budget below W8A8 could be met there). A budget below what
uniform 4-bit costs on them is a row saying so, not a failed job.
"""

from __future__ import annotations

from typing import Any

from benchmarks.suites.quant import ours
from benchmarks.suites.quant.jobs import Job, row
from benchmarks.suites.quant.workspace import Workspace, module_outputs, score


def mixed_jobs(ws: Workspace) -> list[Job]:
    """Greedy mixed precision at each budget on each base, beside the same prepared model's uniform W8A8 plan."""
    return [_mixed_job(ws, method) for method in ws.args.mixed_base]


def _mixed_targets(ws: Workspace) -> tuple[str, ...]:
    from converters.targets.registry import target_info

    grouped = tuple(t for t in ws.args.targets if target_info(t).group_weights)
    return grouped or tuple(ws.args.targets)


def _mixed_job(ws: Workspace, method: str) -> Job:
    base = {"model": ws.subject.name, "origin": "ours", "method": f"{method} + greedy MP", "bits": "mixed"}
    base["evaluated"] = "fake-quant (torch)"
    targets = _mixed_targets(ws)

    def run() -> list[dict[str, Any]]:
        from quant.cost import plan_bytes
        from quant.fake_quant import apply_plan

        w8 = ws.fake_quant_scores(method, 8, 8)
        plans, prepared, w8_bytes, table_seconds = ours.mixed_plans(
            method, ws.subject.model, ws.subject.calib, ws.args.budgets, targets
        )
        rows = []
        for fraction, plan in plans.items():
            variant = f"budget {fraction:.0%} of W8A8 weights on {'+'.join(targets)}"
            if isinstance(plan, str):
                rows.append(
                    {**base, "status": "failed", "variant": variant, "budget_fraction": fraction, "error": plan}
                )
                continue
            outputs = module_outputs(apply_plan(prepared.module, plan), ws.subject.held_out)
            rows.append(
                row(
                    base,
                    **score(ws, outputs),
                    variant=variant,
                    budget_fraction=fraction,
                    weight_bytes=max(plan_bytes(plan, t) for t in targets),
                    w8a8_weight_bytes=round(w8_bytes),
                    w8a8_sqnr_db=w8["sqnr_db"],
                    weight_bits=plan.summary()["weight_bits"],
                    predicted_sqnr_db=plan.metadata.get("predicted_sqnr_db"),
                    sensitivity_seconds=round(table_seconds, 1),
                    note=ours.MIXED_NOTES[method],
                )
            )
        return rows

    return Job(f"{method} mixed precision ({len(ws.args.budgets)} budgets)", base, run)
