from __future__ import annotations

import numpy as np
import pytest

from converters import convert, load_runner

from .checks import assert_artifact, assert_parity, assert_runner_order


@pytest.fixture(scope="module")
def arts(tmp_path_factory, vit_unit, cross_unit, fresh_inputs):
    out = tmp_path_factory.mktemp("onnx")
    units = (vit_unit, cross_unit)
    return out, {u.name: convert(u, "onnx", "fp32", out, parity_inputs=fresh_inputs[u.name]) for u in units}


def test_vit_artifact_matches_eager(arts, vit_unit):
    art = arts[1]["tiny_vit"]
    assert_artifact(art, vit_unit, "onnx", "fp32", "onnxruntime")
    assert_parity(art, vit_unit, min_db=100, max_diff=1e-5)
    assert art.path.suffix == ".onnx" and art.facts["opset"] >= 18
    assert {"Conv", "MatMul", "Softmax"} <= set(art.facts["onnx_ops"])


def test_two_in_two_out_names_and_order(arts, cross_unit, fresh_inputs):
    art = arts[1]["cross"]
    assert_artifact(art, cross_unit, "onnx", "fp32", "onnxruntime")
    assert_parity(art, cross_unit, min_db=100, max_diff=1e-5)
    assert_runner_order(art, cross_unit, fresh_inputs["cross"])


def test_runner_states_threads_and_leaves_only_artifacts(arts):
    out, by_unit = arts
    assert load_runner("onnx", by_unit["tiny_vit"].path, num_threads=2).num_threads == 2
    assert sorted(p.name for p in out.iterdir()) == ["cross.fp32.onnx", "tiny_vit.fp32.onnx"]


def test_runner_spins_only_when_asked(arts, fresh_inputs):
    from converters.targets.onnx.runner import OnnxRuntimeRunner

    path = arts[1]["tiny_vit"].path
    quiet, spinning = OnnxRuntimeRunner(path, 2), OnnxRuntimeRunner(path, 2, allow_spinning=True)
    key = "session.intra_op.allow_spinning"
    assert quiet.session.get_session_options().get_session_config_entry(key) == "0"
    assert spinning.session.get_session_options().get_session_config_entry(key) == "1"
    x = [t.numpy() for t in fresh_inputs["tiny_vit"]]
    for a, b in zip(quiet.run(*x), spinning.run(*x), strict=True):  # a thread-pool setting, not arithmetic
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_io_binding_writes_fresh_outputs_equal_to_a_plain_run(arts, fresh_inputs):
    """Outputs land in arrays the runner hands back: equal to `session.run`'s, and a second call does not
    overwrite the first call's (the tracker holds a frame's outputs while the next unit runs)."""
    from converters.targets.onnx.runner import OnnxRuntimeRunner

    path = arts[1]["cross"].path
    bound, plain = OnnxRuntimeRunner(path, 1, io_binding=True), OnnxRuntimeRunner(path, 1)
    assert bound.io_binding and not plain.io_binding
    x = [t.numpy() for t in fresh_inputs["cross"]]
    first = bound.run(*x)
    kept = [a.copy() for a in first]
    second = bound.run(*(2.0 * a for a in x))
    for a, b, k, s in zip(first, plain.run(*x), kept, second, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, k)  # the second call wrote elsewhere
        assert not np.array_equal(a, s)
