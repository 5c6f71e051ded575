"""The devices a split runs on (`devices.toml`) and which sub-model goes to which, within each one's memory.

    [[devices]]
    name = "pi-kitchen"        # a folder name: the device's bundle is written to OUT/<name>/
    memory_mb = 64             # what the sub-model's weights may take on it
    address = "10.0.0.7:50051" # optional: where `edgevit serve` listens on it (the client's default)

Each device holds one sub-model (N devices, N class subsets). A sub-model's need is its weights in float32, the
bytes its artifact carries. Pairing the largest need with the largest device, the next with the next, and so on
fits every sub-model whenever any one-to-one assignment does (an exchange argument: swapping two devices in a
feasible pairing into sorted order keeps it feasible), so a failure here means no assignment exists.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevit.errors import EdgevitError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KEYS = ("name", "memory_mb", "address")
MB = 2**20


@dataclass(frozen=True)
class Device:
    name: str
    memory_mb: float
    address: str | None = None


def read_devices(path: Path) -> list[Device]:
    """The devices of a `devices.toml`, checked: unique folder-safe names, positive memory, at least two."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgevitError(
            f"--devices {path} does not exist; write one ([[devices]] name, memory_mb, address)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgevitError(f"cannot read --devices {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EdgevitError(f"--devices {path} is not valid TOML ({exc}); fix the syntax") from None
    rows = table.get("devices")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or set(table) != {"devices"}:
        raise EdgevitError(f'{path}: expected only [[devices]] tables (name = "a", memory_mb = 64, address = "h:p")')
    devices = [_device(row, i, path) for i, row in enumerate(rows)]
    if len(devices) < 2:
        raise EdgevitError(f"{path} lists {len(devices)} device(s); a split needs at least 2")
    names = [d.name for d in devices]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise EdgevitError(f"{path}: device name {duplicate!r} appears twice; names must be unique")
    return devices


def _device(row: Mapping[str, object], i: int, path: Path) -> Device:
    where = f"{path}: devices[{i}]"
    unknown = sorted(set(row) - set(KEYS))
    if unknown:
        raise EdgevitError(f"{where} has unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    name, memory, address = row.get("name"), row.get("memory_mb"), row.get("address")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise EdgevitError(f"{where}.name = {name!r} must be a short folder name (letters, digits, _ . -)")
    if isinstance(memory, bool) or not isinstance(memory, int | float) or not memory > 0:
        raise EdgevitError(f"{where}.memory_mb = {memory!r} must be a positive number of MB")
    if address is not None and (not isinstance(address, str) or not address.rpartition(":")[2].isdigit()):
        raise EdgevitError(f'{where}.address = {address!r} must be HOST:PORT, e.g. "127.0.0.1:50051"')
    return Device(name, float(memory), address)


def assign(needs: Sequence[int], devices: Sequence[Device], what: Sequence[str]) -> list[Device]:
    """The device of each sub-model (`needs[i]` bytes, described by `what[i]`), one sub-model per device.

    Raises naming the first sub-model that cannot fit and what would make it fit."""
    if len(needs) != len(devices):
        raise ValueError(f"{len(needs)} sub-models for {len(devices)} devices")
    by_need = sorted(range(len(needs)), key=lambda i: (-needs[i], i))
    by_memory = sorted(devices, key=lambda d: (-d.memory_mb, d.name))
    chosen: dict[int, Device] = {}
    for i, device in zip(by_need, by_memory, strict=True):
        if needs[i] > device.memory_mb * MB:
            raise EdgevitError(
                f"sub-model {what[i]} needs {needs[i] / MB:.3f} MB of float32 weights but the largest device left, "
                f"{device.name!r}, has memory_mb = {device.memory_mb:g}; give it memory_mb >= "
                f"{needs[i] / MB:.3f}, prune harder (--prune-budget), or split a smaller model"
            )
        chosen[i] = device
    return [chosen[i] for i in range(len(needs))]
