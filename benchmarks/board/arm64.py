"""Bench a bundle on the arm64 Debian root (`make_arm64_root.sh`) through the ssh device, and write what happened.

    python -m benchmarks.board.arm64 BUNDLE [--root /tmp/arm64board/root] [--port 2222] [--out benchmarks/results]

Builds the root when it is not there yet (root only; minutes to tens of minutes), then benches every artifact of
BUNDLE on `ssh:root@127.0.0.1:PORT` with the root's aarch64 runtimes and writes `board_arm64.json` (the results)
and `board_arm64.md` (the tables, the board's machine, and the fact that this is emulation: the outputs and
fidelity are the aarch64 runtimes' own, the timings are qemu's and say nothing about a real board).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.bench import BenchSettings
from benchmarks.bench_results import results_tables
from benchmarks.devices import open_device
from benchmarks.report import json_safe, render_markdown

SCRIPT = Path(__file__).with_name("make_arm64_root.sh")
REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--root", type=Path, default=Path("/tmp/arm64board/root"))
    parser.add_argument("--port", type=int, default=2222)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    env = {**os.environ, "CONSTRAINTS": str(REPO / "constraints.txt"), "PIP": f"{sys.executable} -m pip"}
    subprocess.run(["sh", str(SCRIPT), str(args.root), str(args.port)], check=True, env=env)
    config = args.root.parent / "ssh_config"
    config.write_text(
        f"Host *\n  IdentityFile {args.root.parent / 'board_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {args.root.parent / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
    )
    device = open_device(f"ssh:root@127.0.0.1:{args.port}", ssh_config=config, python="/opt/board/bin/python")
    results = device.bench(args.bundle, BenchSettings(runs=args.runs, warmup=1, threads=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "board_arm64.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")
    machine = results["machine"]
    summary = [
        f"device `{results['device']}`: {results['device_note']}",
        f"inputs: {results['inputs']}",
        "what this shows: the bundle converted on x86 loads and runs on the aarch64 builds of the runtimes, and its "
        "outputs agree with the fp32 reference as the fidelity table says (correctness only)",
        "what it does not show: speed. qemu translates every aarch64 instruction on the x86 host, so the latencies "
        "below are the emulator's and say nothing about a real board",
    ]
    title = "Bench on an emulated arm64 board (Debian root under qemu-user, over ssh on loopback)"
    text = render_markdown(title, results["created"], machine, results_tables(results), summary)
    (args.out / "board_arm64.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
