"""`edgevit convert`: a registered model's deploy units → a verified bundle for one or all targets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevit.errors import EdgevitError


@dataclass(frozen=True)
class QuantOptions:
    """`--quant` and its companions: `edgevit convert --quant M` is `edgevit quantize --method M`."""

    method: str
    bits: str
    budget_mb: float | None
    calib: str

    @classmethod
    def from_flags(
        cls, method: str | None, bits: str | None, budget_mb: float | None, calib: str | None, precision: str | None
    ) -> QuantOptions | None:
        """None for a float conversion; refuses quantization flags without `--quant` and `--precision` with it."""
        if method is None:
            flags = (("--bits", bits), ("--budget-mb", budget_mb), ("--calib", calib))
            given = [flag for flag, value in flags if value is not None]
            if given:
                raise EdgevitError(f"{', '.join(given)} only apply with --quant ptq|qhyvit|mptq")
            return None
        if precision is not None:
            raise EdgevitError("--precision sets float artifacts; with --quant the plan sets the bits (drop one)")
        return cls(method, bits or "8", budget_mb, calib or "builtin")


def convert(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    overrides: Sequence[str],
    target: str,
    precision: str | None,
    quant: QuantOptions | None,
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from converters import ConversionError, resolve_targets
    from converters.bundle import check_out
    from edgevit.bundle import weights_origin, write_bundle
    from edgevit.commands.inspect import print_table
    from edgevit.commands.quantize import parse_overrides, quantize
    from edgevit.models import create
    from edgevit.quiet import backend_output_to_log

    if quant is not None:
        quantize(
            model_name, variant, checkpoint, overrides, quant.method, quant.bits, quant.budget_mb, quant.calib,
            target, False, out, force, as_json,
        )  # fmt: skip
        return
    console = Console(stderr=True)
    targets = resolve_targets(target)
    if precision is not None and precision not in ("fp32", "fp16"):
        raise EdgevitError(f"unknown precision {precision!r}; valid: fp32, fp16")
    check_out(out, force, inputs=[checkpoint])
    model = create(model_name, variant, checkpoint=checkpoint, **parse_overrides(overrides))
    if weights_origin(model) == "random":
        console.print(
            "[bold yellow]note: no --checkpoint: converting RANDOM weights (files are valid, outputs meaningless)[/]",
            soft_wrap=True,
        )
    total = len(model.deploy_units()) * len(targets)
    with backend_output_to_log("edgevit-convert") as (log, real_err):
        # A bar only on a terminal: elsewhere it would add a blank line to a failure's one-line message.
        progress = Progress(console=Console(file=real_err), disable=not real_err.isatty())
        task = progress.add_task("converting", total=total)

        started = iter(range(total))

        def step(unit: str, tgt: str) -> None:
            progress.update(task, description=f"{unit} → {tgt}", completed=next(started))

        try:
            with progress:
                manifest = write_bundle(model, targets, precision, out, force, on_artifact=step, log=log)
                progress.update(task, completed=total)
        except ConversionError as exc:  # the log explains it: kept, and named
            raise ConversionError(f"{exc} (backend log: {log})") from None
        except BaseException:
            log.unlink(missing_ok=True)
            raise
    log.unlink()
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        print_table(manifest, out)
