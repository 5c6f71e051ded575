"""The target registry: the one list every caller derives target names, precisions and held bits from."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from converters import TARGETS, ConversionError, load_runner, precisions, resolve_targets, target_info
from converters.errors import RuntimeUnavailableError
from converters.quantized import WEIGHT_BITS, held_bits

BACKENDS = ("onnx", "onnxruntime", "executorch", "coremltools", "litert_torch", "ai_edge_litert", "torchao", "quant")


def test_resolve_targets_all_lists_and_unknown():
    assert resolve_targets("all") == TARGETS == ("onnx", "executorch", "tflite", "coreml")
    assert resolve_targets("tflite, onnx") == ("onnx", "tflite")  # canonical order, spaces allowed
    expected = "unknown target 'x'; valid targets: onnx, executorch, tflite, coreml, all (or a list)"
    with pytest.raises(ConversionError) as err:
        resolve_targets("onnx,x")
    assert str(err.value) == expected


def test_precisions_and_held_bits_come_from_the_registry():
    assert precisions("coreml") == ("fp16", "fp32") and precisions("onnx") == ("fp32",)
    assert WEIGHT_BITS == {"onnx": (4, 8), "executorch": (4, 8), "tflite": (4, 8), "coreml": (4, 6, 8)}
    assert held_bits("coreml") == "4/6/8-bit weights and 8-bit activations"
    assert {t: target_info(t).activations for t in TARGETS} == {
        "onnx": "static",
        "executorch": "dynamic",
        "tflite": "dynamic",
        "coreml": "static",
    }


def test_coreml_runs_only_on_macos(monkeypatch, tmp_path):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert not target_info("coreml").runs_here() and target_info("onnx").runs_here()
    with pytest.raises(RuntimeUnavailableError, match=r"^Core ML prediction needs macOS \(this is Linux\)$"):
        load_runner("coreml", tmp_path / "m.mlpackage")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert target_info("coreml").why_not_here() is None


def test_every_target_package_has_its_parts_and_importing_them_loads_no_backend():
    # Each target's lower/runner/quantized module must import without its backend (backends load on use), and
    # `import converters` must not even import the target packages.
    code = (
        "import sys, converters\n"
        "assert not [m for m in sys.modules if m.startswith('converters.targets.') and m.count('.') > 2]\n"
        "for t in converters.TARGETS:\n"
        "    info = converters.target_info(t)\n"
        "    assert callable(info.part('lower').convert) and callable(info.part('runner').load_runner)\n"
        "    assert callable(info.part('quantized').lowering)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({BACKENDS!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['quant']"  # the quantized lowerings read the plan; no backend is imported
