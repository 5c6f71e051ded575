"""The places in a module where tokens can be compressed, found by the block types the models declare, and how a
keep ratio becomes each place's per-block token counts.

A keep ratio k means: from block `start` on, every compressing block keeps round(k·n) of its n patch tokens
(never fewer than n/2 nor 1, the most ToMe's bipartite matching can merge in one block, so the three methods always
run at the same counts). A ViT's count falls geometrically block after block; EfficientTAM's global blocks each
compress from the full grid, since its window blocks between them restore it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from edgevit.compress.tokens.stacks import CompressedGlobalBlock, CompressedStack


def kept(n: int, keep: float) -> int:
    """Tokens one compressing block keeps of `n`."""
    return max(1, n - (n + 1) // 2, min(n, round(n * keep)))


@dataclass
class StackSite:
    """A ViT's blocks, replaced by one `CompressedStack`."""

    name: str
    stack: CompressedStack
    tokens: int  # patch tokens entering the first block
    start: int

    def set_keep(self, keep: float) -> None:
        counts, n = [], self.tokens
        for i in range(len(self.stack.blocks)):
            n = kept(n, keep) if i >= self.start else n
            counts.append(n)
        self.stack.counts = counts

    def counts(self) -> list[int]:
        return list(self.stack.counts)


@dataclass
class GlobalSite:
    """EfficientTAM trunk's global-attention blocks, each replaced by a `CompressedGlobalBlock`."""

    name: str
    blocks: dict[int, CompressedGlobalBlock] = field(default_factory=dict)
    tokens: int = 0
    depth: int = 0
    start: int = 0

    def set_keep(self, keep: float) -> None:
        for i, block in self.blocks.items():
            block.count = kept(self.tokens, keep) if i >= self.start else self.tokens

    def counts(self) -> list[int]:
        return [self.blocks[i].count if i in self.blocks else self.tokens for i in range(self.depth)]


Site = StackSite | GlobalSite


def install(module: nn.Module, method: str, tau: float, start: int) -> list[Site]:
    """Replace every compressible block group in `module` (in place) with its compressing module, at keep 1
    (the output unchanged until `set_keep`); returns the sites found."""
    from edgevit.models.efficienttam.image_encoder import ViT as TrunkViT
    from edgevit.models.vit import VisionTransformer

    sites: list[Site] = []
    for name, sub in list(module.named_modules()):
        if isinstance(sub, VisionTransformer):
            # A root classifier reads only the class token; anything else (avg pool, a dense head) reads patches.
            dense = bool(name) or sub.cfg.global_pool != "token"
            n = sub.cfg.grid_size**2
            stack = CompressedStack(sub.blocks, sub.num_prefix_tokens, method, tau, dense, [n] * len(sub.blocks))
            sub.blocks = nn.ModuleList([stack])
            sites.append(StackSite(name or "model", stack, n, start))
        elif isinstance(sub, TrunkViT):
            site = GlobalSite(name, tokens=sub.feat_size**2, depth=len(sub.blocks), start=start)
            for i, block in enumerate(sub.blocks):
                if block.window_size == 0:
                    site.blocks[i] = CompressedGlobalBlock(block, method, tau, site.tokens)
                    sub.blocks[i] = site.blocks[i]
            sites.append(site)
    return sites
