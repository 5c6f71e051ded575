"""The assembled EfficientTAM: official state-dict layout, checkpoint loading and its bad inputs, units export."""

from __future__ import annotations

import hashlib

import pytest
import torch

from benchmarks.peers.efficienttam_official import build_reference
from converters.bundle import Weights
from edgevit.bundle import weights_of
from edgevit.errors import EdgevitError
from edgevit.models import create


@pytest.fixture(scope="module")
def reference():
    return build_reference("ti", 256, seed=0)


@pytest.fixture(scope="module")
def official_checkpoint(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "efficienttam_ti_256.pt"
    torch.save({"model": reference.state_dict()}, path)
    return path


def test_state_dict_layout_equals_official(reference):
    ours = create("efficienttam_ti", image_size=256)
    theirs = reference.state_dict()
    assert len(theirs) == 455
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_official_checkpoint_loads_strictly(reference, official_checkpoint):
    ours = create("efficienttam_ti", checkpoint=official_checkpoint, image_size=256)
    for k, v in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    # the manifest's record of the weights: the loaded file's sha256, said by whoever loaded it
    assert weights_of(ours, official_checkpoint) == Weights(
        "checkpoint", hashlib.sha256(official_checkpoint.read_bytes()).hexdigest()
    )
    # the precomputed position embedding follows the loaded weights (official: bicubic resize per call)
    from sam2.modeling.backbones.utils import get_abs_pos

    expected = get_abs_pos(reference.image_encoder.trunk.pos_embed, True, (16, 16))
    assert torch.allclose(ours.image_encoder.trunk.abs_pos, expected, atol=1e-6)


def test_checkpoint_of_another_variant_is_refused(official_checkpoint):
    with pytest.raises(EdgevitError, match=r"does not match .*tensor\(s\) of another shape.*pick the matching variant"):
        create("efficienttam_s", checkpoint=official_checkpoint, image_size=256)


def test_checkpoint_with_wrong_keys_is_refused(tmp_path, reference):
    sd = dict(reference.state_dict())
    sd["extra.weight"] = sd.pop("no_obj_ptr")
    path = tmp_path / "bad.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(EdgevitError, match=r"1 missing key\(s\): no_obj_ptr; 1 unexpected key\(s\): extra.weight"):
        create("efficienttam_ti", checkpoint=path, image_size=256)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_one_line_error(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(EdgevitError, match="is not a readable torch file") as info:
        create("efficienttam_ti_512", checkpoint=path)
    assert "\n" not in str(info.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(EdgevitError, match="does not exist"):
        create("efficienttam_ti_512", checkpoint=tmp_path / "nope.pt")


def test_unknown_model_and_variant_list_valid_ones():
    with pytest.raises(EdgevitError, match="valid models: .*efficienttam"):
        create("efficienttam_xl")
    with pytest.raises(EdgevitError, match="valid variants: ti, s, ti_512, s_512"):
        create("efficienttam", variant="xl")


@pytest.mark.parametrize("memory", [1, 2])
def test_efficient_memory_variants_load_the_official_layout_strictly(memory, tmp_path):
    """`efficienttam_{ti,s}_1/_2` are the official `_1`/`_2` configs at 1024; the same memory at 512 has no
    official checkpoint, which `edgevit models` says."""
    from edgevit.commands.models import rows

    ref = build_reference("ti", 256, seed=1, memory=memory)
    path = tmp_path / f"efficienttam_ti_{memory}.pt"
    torch.save({"model": ref.state_dict()}, path)
    ours = create(f"efficienttam_ti_{memory}", checkpoint=path, image_size=256)
    assert ours.cfg.efficient_memory == memory
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in ref.state_dict().items())
    for size in ("ti", "s"):
        full, small = create(f"efficienttam_{size}_{memory}"), create(f"efficienttam_{size}_512_{memory}")
        assert (full.cfg.image_size, small.cfg.image_size) == (1024, 512)
        assert full.cfg.official_checkpoint and not small.cfg.official_checkpoint
    notes = {r["name"]: r["note"] for r in rows() if r["model"] == "efficienttam"}
    assert notes[f"efficienttam_ti_{memory}"] == notes["efficienttam_ti_512"] == ""
    assert "no official checkpoint" in notes[f"efficienttam_s_512_{memory}"]


def test_unknown_efficient_memory_is_refused():
    with pytest.raises(EdgevitError, match="efficient_memory must be 0 .*, 1 or 2"):
        create("efficienttam_ti_512", efficient_memory=3)


@pytest.mark.parametrize("name", ["efficienttam_ti", "efficienttam_ti_2"])
def test_every_unit_exports_with_static_shapes(name):
    model = create(name, image_size=256)
    units = model.deploy_units()
    assert [u.name for u in units] == [
        "image_encoder",
        "memory_attention",
        "prompt_mask_decoder",
        "memory_encoder",
    ]
    for unit in units:
        ep = torch.export.export(unit.module, unit.example_inputs, strict=False)
        eager = unit.run_eager(*unit.example_inputs)
        exported = ep.module()(*unit.example_inputs)
        exported = exported if isinstance(exported, tuple) else (exported,)
        assert len(exported) == len(unit.output_names)
        for e, x in zip(eager, exported, strict=True):
            if e.numel() > 1:
                assert float(e.float().std()) > 0, f"{unit.name}: constant output proves nothing"
            torch.testing.assert_close(x, e, atol=1e-5, rtol=1e-5)
