"""`edgevit farm run | status | export`: bench many bundles on many devices, resumably (the harness in
`benchmarks.farm` does the work; this command reads the flags, gives every bundle the photos `edgevit bench`
uses as fidelity inputs, shows progress, and turns the farm's errors into one line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgevit.errors import EdgevitError

farm_app = typer.Typer(
    no_args_is_help=True,
    help="Bench bundles on a farm of devices (farm.toml), resumably, results in SQLite; on Ray across hosts.",
)


def farm_run(farm_file: Path, bundles: list[Path], db: Path, ray: str | None, as_json: bool) -> None:
    from rich.console import Console

    from benchmarks.farm.errors import FarmError
    from benchmarks.farm.run import run_farm
    from benchmarks.farm.spec import FarmSpec
    from benchmarks.farm.store import Store, run_lock
    from edgevit.data.bench_inputs import bench_inputs

    console = Console(stderr=True)

    def on_event(job: Any, event: str) -> None:
        if console.is_terminal:
            console.print(f"{event:>6}  {Path(job.bundle).name} @ {job.device} (try {job.attempts})  {job.error or ''}")

    try:
        farm = FarmSpec.from_toml(farm_file)
        db = Path(db)
        with run_lock(db):
            store = Store(db, create=True)
            try:
                photos = lambda _, manifest: bench_inputs(manifest)  # noqa: E731
                ids = run_farm(farm, bundles, store, photos, ray_address=ray or False, on_event=on_event)
                jobs = store.jobs(ids)
            finally:
                store.close()
    except FarmError as exc:
        raise EdgevitError(str(exc)) from None
    _show(jobs, db, as_json)
    if failed := [j for j in jobs if j.status != "done"]:
        raise EdgevitError(
            f"{len(failed)} of {len(jobs)} jobs failed ({failed[0].device}: {failed[0].error}); they are recorded "
            f"in {db}, and running the same command again retries them"
        )


def farm_status(db: Path, as_json: bool) -> None:

    from benchmarks.farm.errors import FarmError
    from benchmarks.farm.store import Store

    try:
        store = Store(db)
        jobs = store.jobs()
        store.close()
    except FarmError as exc:
        raise EdgevitError(str(exc)) from None
    _show(jobs, db, as_json)


def _show(jobs: list, db: Path, as_json: bool) -> None:
    """The jobs as JSON (one summary each) or as the status table: what `run` and `status` both print."""
    from rich.console import Console

    from benchmarks.farm.export import status_table
    from benchmarks.report import print_tables

    if as_json:
        sys.stdout.write(json.dumps([j.summary() for j in jobs], indent=1) + "\n")
    else:
        print_tables([status_table(jobs, db)], Console())


def farm_export(db: Path, out: Path, force: bool) -> None:
    from benchmarks.farm.errors import FarmError
    from benchmarks.farm.export import export_results
    from benchmarks.farm.store import Store
    from converters.bundle import atomic_dir

    try:
        store = Store(db)
        jobs = store.jobs()
        store.close()
    except FarmError as exc:
        raise EdgevitError(str(exc)) from None
    if not any(j.status == "done" for j in jobs):
        raise EdgevitError(f"{db} holds no finished job yet; run `edgevit farm run` first")
    with atomic_dir(out, force, inputs=[db]) as tmp:
        written = export_results(jobs, tmp)
    print(f"wrote {len(written)} results files to {out}/ (edgevit report {out}/*.json --out report.html)")


def run_cmd(
    farm_file: Annotated[Path, typer.Argument(help="farm.toml: the devices, [bench] settings, attempts, ray.")],
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders written by `edgevit convert`.")],
    db: Annotated[Path, typer.Option(help="The results database (SQLite); an existing one is resumed.")] = Path(
        "farm.sqlite"
    ),
    ray: Annotated[
        str | None, typer.Option(help="Run on the Ray cluster at this address (HOST:PORT), one worker per device.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
) -> None:
    """Bench every bundle on every device of farm.toml, devices in parallel, each result stored as it arrives.

    A killed run resumes where it stopped (finished jobs are never re-run); a device that fails is retried,
    then recorded failed.

    Example: edgevit farm run farm.toml bundle/ bundle-int8/ --db farm.sqlite
    """
    farm_run(farm_file, bundles, db, ray, as_json)


def status_cmd(
    db: Annotated[Path, typer.Argument(help="A database written by `edgevit farm run`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
) -> None:
    """Show every job of a farm database: status, attempts, host, the last error.

    Example: edgevit farm status farm.sqlite
    """
    farm_status(db, as_json)


def export_cmd(
    db: Annotated[Path, typer.Argument(help="A database written by `edgevit farm run`.")],
    out: Annotated[Path, typer.Option(help="Folder for one results JSON per finished job.")] = Path("results"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Write each finished job's results as a file `edgevit report` reads.

    Example: edgevit farm export farm.sqlite --out results/ && edgevit report results/*.json --out report.html
    """
    farm_export(db, out, force)


farm_app.command("run")(run_cmd)
farm_app.command("status")(status_cmd)
farm_app.command("export")(export_cmd)
