"""Q-HyViT (Lee et al., "Post-Training Quantization of Hybrid Vision Transformers with Bridge Block
Reconstruction for IoT Systems"), end to end.

Why hybrids need their own PTQ: MobileViT / EfficientFormer mix BatchNorm'd convs with LayerNorm'd or
GroupNorm'd attention, have few parameters (every layer matters), activation ranges that swing widely
from layer to layer, and *bridge blocks* — where a conv block hands its map to an attention block — whose
hand-over tensors are the hardest to quantize (one-sided, far from zero: the asymmetric zero-point
overflows). ViT PTQ methods applied as they are collapse on them. The method, as built here:

1. fold BatchNorm into the convs (`quant.bn_fold`), so the quantized weight is the one backends run;
2. per layer, output-aware scale search with the granularity (per-tensor / per-channel) and scheme
   (symmetric / asymmetric) chosen by the same loss, zero-points guarded (`quant.scale_search`);
3. block-wise reconstruction with learned rounding (`quant.reconstruction`) where each bridge — the conv
   block, any reshape, the attention block — is **one unit**, so the conv block's rounding is chosen for the
   attention block's output rather than for its own; `joint_bridge=False` reconstructs them separately
   (the paper's ablation);
4. the plan (method "qhyvit") and a fake-quant model whose weights sit exactly on the plan's grid.

As far as its published summary goes, the paper's reconstruction is the Hessian-guided search of scale,
granularity and scheme (PTQ4ViT-style), with bridges scored on the attention block's output. The learned
rounding in BRECQ-style units on top of it is this project's addition, aimed at 4-6-bit weights, where the
rounding error of a few hundred thousand parameters is what the output feels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from quant.bn_fold import fold_batchnorm
from quant.errors import QuantError
from quant.fake_quant import Batch, apply_plan, materialize_batches, run_batch
from quant.plan import QuantPlan
from quant.reconstruction import ReconConfig, ReconUnit, reconstruct
from quant.scale_search import SearchConfig, hessian_search


class BridgeLike(Protocol):
    """What Q-HyViT needs of a bridge (edgevit's `BridgeBlock` is one): the model's modules it spans."""

    @property
    def conv_name(self) -> str: ...

    @property
    def attn_name(self) -> str: ...

    @property
    def path(self) -> nn.Module: ...


@runtime_checkable
class HasBridgeBlocks(Protocol):
    """A model that names its conv→attention hand-overs (edgevit's `mobilevit` and `efficientformer` do).

    The hook Q-HyViT needs from a model, owned here so a model declares it by shape and the caller asks with
    `isinstance(model, HasBridgeBlocks)`; a model without it is quantized with no joint bridges.
    """

    def bridge_blocks(self) -> Sequence[BridgeLike]: ...


@runtime_checkable
class HasBlocksInOrder(Protocol):
    """A model that lists its reconstruction blocks, by qualified name, in forward order."""

    def blocks_in_order(self) -> Sequence[tuple[str, nn.Module]]: ...


def bridges_of(model: nn.Module) -> Sequence[BridgeLike]:
    """The model's bridge blocks where it declares them (`HasBridgeBlocks`), else none."""
    return model.bridge_blocks() if isinstance(model, HasBridgeBlocks) else ()


def bridge_module_names(model: nn.Module, bridge: BridgeLike) -> tuple[str, ...]:
    """Qualified names in `model` of the modules `bridge.path` chains (it holds the model's own modules)."""
    names = {id(m): n for n, m in model.named_modules()}
    found = []
    for module in bridge.path.children():
        name = names.get(id(module))
        if name is None:
            raise QuantError(
                f"bridge {bridge.conv_name!r} -> {bridge.attn_name!r} holds a {type(module).__name__} that is not "
                "a module of this model: take the bridges from the model being quantized"
            )
        found.append(name)
    if not found or found[0] != bridge.conv_name or found[-1] != bridge.attn_name:
        raise QuantError(f"bridge path {found} must run from {bridge.conv_name!r} to {bridge.attn_name!r}")
    return tuple(found)


def default_blocks(model: nn.Module) -> list[str]:
    """The model's own block list where it declares one (`HasBlocksInOrder`, as edgevit's hybrids do)."""
    return [name for name, _ in model.blocks_in_order()] if isinstance(model, HasBlocksInOrder) else []


def build_units(
    model: nn.Module,
    plan: QuantPlan,
    blocks: Sequence[str],
    bridges: Sequence[tuple[str, ...]],
    joint_bridge: bool,
    example: Batch,
) -> list[ReconUnit]:
    """Reconstruction units in forward order: bridges (joint or split), other blocks, then lone layers.

    Every planned layer ends up in exactly one unit: layers outside all blocks (a stem, a head) are units
    of their own, i.e. layer-wise AdaRound.
    """
    units: list[ReconUnit] = []
    for path in bridges:
        if joint_bridge:
            units.append(ReconUnit(f"{path[0]}+{path[-1]}", path))
        else:
            units.extend(ReconUnit(m, (m,)) for m in path)
    in_bridge = {m for path in bridges for m in path}
    units.extend(ReconUnit(b, (b,)) for b in blocks if b not in in_bridge)
    units = [u for u in units if any(u.contains(name) for name in plan.layers)]
    units.extend(ReconUnit(n, (n,)) for n in plan.layers if not any(u.contains(n) for u in units))

    order: dict[str, int] = {}
    handles = []
    for unit in units:

        def hook(module: nn.Module, args: tuple, name: str = unit.first) -> None:
            order.setdefault(name, len(order))

        handles.append(model.get_submodule(unit.first).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run_batch(model, example)
    finally:
        for handle in handles:
            handle.remove()
    missing = [u.name for u in units if u.first not in order]
    if missing:
        raise QuantError(f"unit(s) {missing} never ran on a calibration batch, so they cannot be reconstructed")
    return sorted(units, key=lambda u: order[u.first])


def qhyvit_quantize(
    model: nn.Module,
    calib_batches: Iterable[Batch],
    bridge_blocks: Sequence[BridgeLike] = (),
    weight_bits: int = 8,
    act_bits: int = 8,
    joint_bridge: bool = True,
    iters: int = 500,
    *,
    blocks: Sequence[str] | None = None,
    search: SearchConfig | None = None,
    recon: ReconConfig | None = None,
    min_batches: int = 4,
    progress: bool = True,
) -> tuple[nn.Module, QuantPlan]:
    """Quantize a hybrid ViT with Q-HyViT; returns (fake-quant model, plan).

    The fake-quant model is a BN-folded copy (the input is untouched); `strip_fake_quant` on it gives the
    float model with reconstructed, on-grid weights, which is what a converter lowers with the plan.
    `bridge_blocks` are the model's conv→attention hand-overs (`bridges_of(model)`: its `HasBridgeBlocks` hook);
    `blocks` the reconstruction blocks (default: the model's `blocks_in_order()`, else layer-wise); `iters`
    are reconstruction iterations per block, so a joint bridge gets the sum of its blocks' (they override
    `recon.iters`).
    """
    batches = materialize_batches(calib_batches, min_batches, "Q-HyViT calibration")
    recon = dataclasses.replace(recon or ReconConfig(), iters=iters)
    bridges = [bridge_module_names(model, b) for b in bridge_blocks]
    blocks = list(default_blocks(model) if blocks is None else blocks)
    folded, folded_pairs = fold_batchnorm(model, batches[0])
    searched = hessian_search(folded, batches, weight_bits, act_bits, config=search, progress=progress)
    plan = searched.plan
    units = build_units(folded, plan, blocks, bridges, joint_bridge, batches[0])
    reports = reconstruct(folded, batches, plan, units, recon, progress=progress)
    plan.metadata.update(
        {
            "method": "qhyvit",
            "weight_bits": weight_bits,
            "act_bits": act_bits,
            "bn_folded": [list(pair) for pair in folded_pairs],
            "bridges": [list(path) for path in bridges],
            "joint_bridge": joint_bridge,
            "reconstruction": {
                "iters": recon.iters,
                "units": [r.as_dict() for r in reports],
            },
        }
    )
    return apply_plan(folded, plan, inplace=True), plan
