"""Devices a bundle is benched on: `open_device(spec)` for "local", "ssh:[USER@]HOST[:PORT]", "adb:SERIAL",
"mac:[USER@]HOST[:PORT]" (see base.py for the interface, and each module for how it reaches its device)."""

from __future__ import annotations

import re
from typing import Any

from benchmarks.devices.base import BenchInputs, Device, DeviceError, DeviceLost, seeded_inputs

__all__ = ["KINDS", "BenchInputs", "Device", "DeviceError", "DeviceLost", "open_device", "parse_host", "seeded_inputs"]

KINDS = ("local", "ssh", "adb", "mac")
_HOST = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^@:\s\[\]]+)(?::(?P<port>\d+))?$")


def parse_host(spec: str, rest: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of "[USER@]HOST[:PORT]" (an IPv6 host in brackets), or DeviceError naming the form."""
    match = _HOST.match(rest)
    if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise DeviceError(f"bad device {spec!r}: expected {spec.split(':')[0]}:[USER@]HOST[:PORT]")
    return match["user"], match["host"].strip("[]"), int(match["port"]) if match["port"] else None


def open_device(spec: str, **options: Any) -> Device:
    """The device `spec` names (not yet contacted: call `check()`); DeviceError for an unknown kind or bad form.

    Options go to the device's constructor: `python` and `ssh_config` for ssh/mac hosts; `adb`, `benchmark_model`,
    `executor_runner` and `remote_dir` for adb.
    """
    kind, _, rest = spec.partition(":")
    if kind == "local" and not rest:
        from benchmarks.devices.local import LocalDevice

        return LocalDevice()
    if kind in ("ssh", "mac"):
        user, host, port = parse_host(spec, rest)
        if kind == "mac":
            from benchmarks.devices.mac import MacDevice

            return MacDevice(spec, host, user, port, **options)
        from benchmarks.devices.ssh import SshDevice

        return SshDevice(spec, host, user, port, **options)
    if kind == "adb" and re.fullmatch(r"[\w.:\-]+", rest):
        from benchmarks.devices.adb import AdbDevice

        return AdbDevice(spec, rest, **options)
    if kind in KINDS:
        raise DeviceError(f"bad device {spec!r}: expected local, ssh:[USER@]HOST[:PORT], adb:SERIAL or mac:HOST")
    raise DeviceError(f"unknown device kind {kind!r} in {spec!r}; use one of: local, ssh:HOST, adb:SERIAL, mac:HOST")
