"""Our fixed-capacity memory attention against the official one: same keys; with every slot filled it equals
the reference on the full bank, and with slots switched off it equals the reference given only the valid
entries (spatial frames first, then 4 tokens per object pointer)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from edgevit.models.efficienttam.config import VARIANTS
from edgevit.models.efficienttam.memory_attention import MemoryAttention
from edgevit.models.efficienttam.position import apply_rope, axial_rope_tables
from tests.models.efficienttam.reference import official_config

CFG = dataclasses.replace(VARIANTS["ti"], image_size=256)  # 16x16 tokens, M = 7*256 + 64
HW = CFG.feat_size**2
PTR_TOKENS = CFG.d_model // CFG.mem_dim


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4 * max(1.0, ref.abs().max().item()), diff
    return diff


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, MemoryAttention]:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    ref = instantiate(copy.deepcopy(official_config("ti", CFG.image_size)["memory_attention"])).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # norms start at identity; perturb them so their handling is checked
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    ours = MemoryAttention(CFG).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(2)
    m = CFG.num_maskmem * HW + CFG.max_obj_ptrs * PTR_TOKENS
    curr = torch.randn(2, HW, CFG.d_model, generator=gen)
    curr_pos = torch.randn(2, HW, CFG.d_model, generator=gen)
    memory = torch.randn(2, m, CFG.mem_dim, generator=gen)
    memory_pos = torch.randn(2, m, CFG.mem_dim, generator=gen)
    return curr, curr_pos, memory, memory_pos


def _reference(ref: torch.nn.Module, curr, curr_pos, memory, memory_pos, num_ptr_tokens: int) -> torch.Tensor:
    """The official module takes sequence-first tensors."""
    with torch.no_grad():
        out = ref(
            curr=curr.transpose(0, 1),
            memory=memory.transpose(0, 1),
            curr_pos=curr_pos.transpose(0, 1),
            memory_pos=memory_pos.transpose(0, 1),
            num_obj_ptr_tokens=num_ptr_tokens,
        )
    return out.transpose(0, 1)


def test_apply_rope_matches_complex_reference() -> None:
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    x = torch.randn(2, 1, 12, 32)
    cos, sin = axial_rope_tables(32, 4, 3)
    expected, _ = apply_rotary_enc(x, x[:, :, :0], compute_axial_cis(32, 4, 3))
    assert torch.allclose(apply_rope(x, cos, sin), expected, atol=1e-6)


def test_state_dict_keys_and_shapes_match(pair: tuple[torch.nn.Module, MemoryAttention]) -> None:
    ref, ours = pair
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.state_dict().items()}


def test_all_valid_matches_full_reference(
    pair: tuple[torch.nn.Module, MemoryAttention], inputs: tuple[torch.Tensor, ...]
) -> None:
    ref, ours = pair
    curr, curr_pos, memory, memory_pos = inputs
    valid = torch.ones(memory.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        got = ours(curr, curr_pos, memory, memory_pos, valid)
        other_memory = ours(curr, curr_pos, torch.randn_like(memory), memory_pos, valid)
    expected = _reference(ref, curr, curr_pos, memory, memory_pos, CFG.max_obj_ptrs * PTR_TOKENS)
    assert expected.std() > 0.1 and expected.std(dim=1).min() > 1e-3
    assert (got - other_memory).abs().max() > 0.1  # the output depends on the memory
    _assert_close(got, expected)


def test_invalid_slots_equal_reference_without_them(
    pair: tuple[torch.nn.Module, MemoryAttention], inputs: tuple[torch.Tensor, ...]
) -> None:
    ref, ours = pair
    curr, curr_pos, memory, memory_pos = inputs
    # per batch element: (valid memory frames, valid object pointers); the second has no pointer at all
    layouts = [([0, 3, 6], [0, 1, 2, 4, 15]), ([0, 1], [])]
    valid = torch.zeros(memory.shape[:2])  # 0/1 float form of the mask
    for b, (frames, ptrs) in enumerate(layouts):
        for f in frames:
            valid[b, f * HW : (f + 1) * HW] = 1
        for p in ptrs:
            start = CFG.num_maskmem * HW + p * PTR_TOKENS
            valid[b, start : start + PTR_TOKENS] = 1
    with torch.no_grad():
        got = ours(curr, curr_pos, memory, memory_pos, valid)
        all_valid = ours(curr, curr_pos, memory, memory_pos, torch.ones_like(valid))
    assert (got - all_valid).abs().max() > 0.1  # masking changes the answer
    for b, (_, ptrs) in enumerate(layouts):
        keep = valid[b].bool()
        expected = _reference(
            ref,
            curr[b : b + 1],
            curr_pos[b : b + 1],
            memory[b : b + 1, keep],
            memory_pos[b : b + 1, keep],
            len(ptrs) * PTR_TOKENS,
        )
        _assert_close(got[b : b + 1], expected)


def test_export_matches_eager(pair: tuple[torch.nn.Module, MemoryAttention], inputs: tuple[torch.Tensor, ...]) -> None:
    _, ours = pair
    curr, curr_pos, memory, memory_pos = inputs
    valid = torch.ones(memory.shape[:2], dtype=torch.bool)
    valid[0, :HW] = False
    args = (curr, curr_pos, memory, memory_pos, valid)
    program = torch.export.export(ours, args)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "complex" in t or "polar" in t], targets
    with torch.no_grad():
        _assert_close(program.module()(*args), ours(*args))
