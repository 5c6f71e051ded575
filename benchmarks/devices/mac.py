"""`mac:[USER@]HOST[:PORT]`: a macOS host over ssh, where Core ML runs (coremltools' MLModel.predict in the board
runner), so this is where the bundle's Core ML artifacts get their figures and parity. Everything else is the
ssh device: the same copy, runner and results; a Mac with onnxruntime or ai-edge-litert installed benches those
too. No Mac is attached to the machine this was written on, so the path is tested by its command lines only,
and an unreachable host says so plainly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.devices.base import DeviceError
from benchmarks.devices.ssh import SshDevice


@dataclass
class MacDevice(SshDevice):
    kind: str = "mac"

    def probe(self) -> dict[str, Any]:
        try:
            found = super().probe()
        except DeviceError as exc:
            raise DeviceError(f"{exc} (a Mac is needed for Core ML; is one attached and reachable?)") from None
        if not found["machine"]["os"].startswith("macOS"):
            raise DeviceError(f"{self.spec} is not a macOS host ({found['machine']['os']}); use ssh:{self.host}")
        return found
