"""Our fixed-capacity memory attention against the official one, for the full cross-attention (base configs) and
the pooled `EfficientRoPEAttention1/2` (`_1`/`_2` configs): same keys; with every slot filled it equals the
reference on the full bank, and with slots switched off it equals the reference given only the valid entries
(spatial frames first, then 4 tokens per object pointer) — for the pooled versions also with a single valid
frame, where the official code does not pool."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from benchmarks.peers.efficienttam_official import official_config
from edgevit.models.efficienttam.config import VARIANTS
from edgevit.models.efficienttam.memory_attention import MemoryAttention
from edgevit.models.efficienttam.position import apply_rope, axial_rope_tables

CFG = dataclasses.replace(VARIANTS["ti"], image_size=256)  # 16x16 tokens, M = 7*256 + 64
HW = CFG.feat_size**2
PTR_TOKENS = CFG.d_model // CFG.mem_dim
MEMORY_KINDS = (0, 1, 2)  # full, EfficientRoPEAttention1, EfficientRoPEAttention2


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4 * max(1.0, ref.abs().max().item()), diff
    return diff


def _pair(memory: int) -> tuple[torch.nn.Module, MemoryAttention]:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    ref = instantiate(copy.deepcopy(official_config("ti", CFG.image_size, memory)["memory_attention"])).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # norms start at identity; perturb them so their handling is checked
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    ours = MemoryAttention(dataclasses.replace(CFG, efficient_memory=memory)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def pairs() -> dict[int, tuple[torch.nn.Module, MemoryAttention]]:
    return {memory: _pair(memory) for memory in MEMORY_KINDS}


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


def _validity(layouts: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per batch element (valid frames, valid pointers) -> frame_valid, ptr_valid (0/1 floats), token mask."""
    frames = torch.zeros(len(layouts), CFG.num_maskmem)
    ptrs = torch.zeros(len(layouts), CFG.max_obj_ptrs)
    tokens = torch.zeros(len(layouts), CFG.num_maskmem * HW + CFG.max_obj_ptrs * PTR_TOKENS, dtype=torch.bool)
    for b, (fs, ps) in enumerate(layouts):
        for f in fs:
            frames[b, f] = 1
            tokens[b, f * HW : (f + 1) * HW] = True
        for p in ps:
            ptrs[b, p] = 1
            start = CFG.num_maskmem * HW + p * PTR_TOKENS
            tokens[b, start : start + PTR_TOKENS] = True
    return frames, ptrs, tokens


def test_apply_rope_matches_complex_reference() -> None:
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    x = torch.randn(2, 1, 12, 32)
    cos, sin = axial_rope_tables(32, 4, 3)
    expected, _ = apply_rotary_enc(x, x[:, :, :0], compute_axial_cis(32, 4, 3))
    assert torch.allclose(apply_rope(x, cos, sin), expected, atol=1e-6)


@pytest.mark.parametrize("memory", MEMORY_KINDS)
def test_state_dict_keys_and_shapes_match(pairs, memory: int) -> None:
    ref, ours = pairs[memory]
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("memory", MEMORY_KINDS)
def test_all_valid_matches_full_reference(pairs, inputs: tuple[torch.Tensor, ...], memory: int) -> None:
    ref, ours = pairs[memory]
    curr, curr_pos, mem, mem_pos = inputs
    frames, ptrs = torch.ones(2, CFG.num_maskmem), torch.ones(2, CFG.max_obj_ptrs)
    with torch.no_grad():
        got = ours(curr, curr_pos, mem, mem_pos, frames, ptrs)
        other_memory = ours(curr, curr_pos, torch.randn_like(mem), mem_pos, frames, ptrs)
    expected = _reference(ref, curr, curr_pos, mem, mem_pos, CFG.max_obj_ptrs * PTR_TOKENS)
    assert expected.std() > 0.1 and expected.std(dim=1).min() > 1e-3
    assert (got - other_memory).abs().max() > 0.1  # the output depends on the memory
    _assert_close(got, expected)


@pytest.mark.parametrize("memory", MEMORY_KINDS)
def test_invalid_slots_equal_reference_without_them(pairs, inputs: tuple[torch.Tensor, ...], memory: int) -> None:
    ref, ours = pairs[memory]
    curr, curr_pos, mem, mem_pos = inputs
    # per batch element: (valid memory frames, valid object pointers); the second has no pointer at all
    layouts = [([0, 3, 6], [0, 1, 2, 4, 15]), ([0, 1], [])]
    frames, ptrs, keep = _validity(layouts)
    with torch.no_grad():
        got = ours(curr, curr_pos, mem, mem_pos, frames, ptrs)
        all_valid = ours(curr, curr_pos, mem, mem_pos, torch.ones_like(frames), torch.ones_like(ptrs))
    assert (got - all_valid).abs().max() > 0.1  # masking changes the answer
    for b, (_, valid_ptrs) in enumerate(layouts):
        sl = slice(b, b + 1)
        expected = _reference(
            ref, curr[sl], curr_pos[sl], mem[sl][:, keep[b]], mem_pos[sl][:, keep[b]], len(valid_ptrs) * PTR_TOKENS
        )
        _assert_close(got[sl], expected)


@pytest.mark.parametrize("memory", (1, 2))
def test_pooled_single_frame_is_not_pooled(pairs, inputs: tuple[torch.Tensor, ...], memory: int) -> None:
    """One valid frame (the frame after the prompt): the official code attends to its h*w keys unpooled."""
    ref, ours = pairs[memory]
    curr, curr_pos, mem, mem_pos = inputs
    layouts = [([0], [0]), ([4], [0, 3])]  # the frame need not sit in slot 0
    frames, ptrs, keep = _validity(layouts)
    with torch.no_grad():
        got = ours(curr, curr_pos, mem, mem_pos, frames, ptrs)
    for b, (_, valid_ptrs) in enumerate(layouts):
        sl = slice(b, b + 1)
        expected = _reference(
            ref, curr[sl], curr_pos[sl], mem[sl][:, keep[b]], mem_pos[sl][:, keep[b]], len(valid_ptrs) * PTR_TOKENS
        )
        _assert_close(got[sl], expected)


def test_pooled_versions_differ_from_full_and_each_other(pairs, inputs: tuple[torch.Tensor, ...]) -> None:
    """Same weights, three cross-attentions: the pooled bank changes the answer, and so does where log(4) goes."""
    curr, curr_pos, mem, mem_pos = inputs
    frames, ptrs, _ = _validity([([0, 3, 6], [0, 1]), ([0, 1, 2, 3, 4, 5, 6], [0])])
    weights = pairs[0][1].state_dict()
    outs = []
    for memory in MEMORY_KINDS:
        ours = pairs[memory][1]
        same_weights = MemoryAttention(ours.cfg).eval()
        same_weights.load_state_dict(weights)
        with torch.no_grad():
            outs.append(same_weights(curr, curr_pos, mem, mem_pos, frames, ptrs))
    assert (outs[0] - outs[1]).abs().max() > 1e-2
    assert (outs[0] - outs[2]).abs().max() > 1e-2
    assert (outs[1] - outs[2]).abs().max() > 1e-2


@pytest.mark.parametrize("memory", MEMORY_KINDS)
def test_export_matches_eager(pairs, inputs: tuple[torch.Tensor, ...], memory: int) -> None:
    _, ours = pairs[memory]
    curr, curr_pos, mem, mem_pos = inputs
    frames, ptrs, _ = _validity([([1, 2], [0]), ([5], [0, 1])])
    args = (curr, curr_pos, mem, mem_pos, frames, ptrs)
    program = torch.export.export(ours, args)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "complex" in t or "polar" in t], targets
    # masking is arithmetic on float validities: no boolean op, no repeat/expand copy
    banned = ("repeat", "expand", "where", "logical", "aten.eq", "aten.gt", "aten.sum")
    assert not [t for t in targets if any(w in t for w in banned)], targets
    with torch.no_grad():
        _assert_close(program.module()(*args), ours(*args))
