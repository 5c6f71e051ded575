"""MatFormer ViT (MatViT): one ViT that holds many, nested in the width of every block's MLP.

MatFormer (Kudugunta et al., 2023) trains the MLP of each block at several hidden widths at once, each
width a prefix of the next: granularity g uses the first `h_g` hidden units of `fc1` (rows) and `fc2`
(columns). Any per-layer choice of granularities (Mix'n'Match) is then a working model, and slicing the
weights yields a plain dense ViT with exactly the nested model's outputs and fewer parameters: the
cheapest way to get a family of deployable sizes from one checkpoint.

`MatViT` is the `vit` family's `VisionTransformer` with nested MLPs, so it shares its module and
parameter names (timm's); a MatFormer checkpoint, or a plain ViT one (its full granularity), loads into it.
`extract()` returns a genuine `VisionTransformer` whose blocks' MLPs have the chosen widths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import ModelSpec
from edgevit.models.vit import Mlp, VisionTransformer, ViTConfig


@dataclass(frozen=True)
class MatViTConfig(ViTConfig):
    # Fractions of the full MLP width (mlp_ratio * embed_dim), smallest first; MatFormer's MatViT uses
    # hidden widths {0.5, 1, 2, 4} x embed_dim, i.e. these fractions at mlp_ratio 4.
    granularities: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """MLP hidden width of each granularity, smallest first."""
        return tuple(round(f * self.mlp_hidden) for f in self.granularities)

    def validate(self) -> None:
        """Reject granularities that are not strictly nested, whole, prefixes of the full MLP."""
        super().validate()
        g = self.granularities
        if not g or g[-1] != 1.0 or any(a >= b for a, b in zip(g, g[1:], strict=False)) or g[0] <= 0:
            raise EdgevitError(
                f"matvit: granularities {g} must increase strictly, be > 0 and end at 1.0 (the full MLP)"
            )
        for f, h in zip(g, self.hidden_widths, strict=True):
            if abs(f * self.mlp_hidden - h) > 1e-6:
                raise EdgevitError(
                    f"matvit: granularity {f} of the {self.mlp_hidden}-wide MLP is not a whole number of hidden units"
                )


class MatMlp(nn.Module):
    """An `Mlp`'s own layers (same names, same tensors), run on the first `hidden` units of its width.

    `hidden` is a Python int fixed before export, so the slices are constants of the graph and no control
    flow depends on data; at full width the module computes exactly what the `Mlp` computed.
    """

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = mlp.fc1, mlp.act, mlp.fc2
        self.hidden = mlp.fc1.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden
        if h == self.fc1.out_features:
            return self.fc2(self.act(self.fc1(x)))
        x = self.act(F.linear(x, self.fc1.weight[:h], self.fc1.bias[:h]))
        return F.linear(x, self.fc2.weight[:, :h], self.fc2.bias)


class MatViT(VisionTransformer):
    """A ViT with nested MLPs: `set_granularity` picks the sub-model it runs, `extract` cuts it out."""

    cfg: MatViTConfig

    def __init__(self, cfg: MatViTConfig, spec: ModelSpec) -> None:
        super().__init__(cfg, spec)
        for block in self.blocks:
            block.mlp = MatMlp(block.mlp)  # takes over the initialised layers: no second allocation
        self._levels = [len(cfg.granularities) - 1] * cfg.depth

    def _resolve(self, granularity: int | Sequence[int]) -> list[int]:
        """One granularity index per block, from one index for all or a per-block list."""
        n = len(self.cfg.granularities)
        levels = [granularity] * self.cfg.depth if isinstance(granularity, int) else list(granularity)
        if len(levels) != self.cfg.depth:
            raise EdgevitError(f"matvit: {len(levels)} granularities given for {self.cfg.depth} blocks")
        bad = [g for g in levels if not isinstance(g, int) or not 0 <= g < n]
        if bad:
            raise EdgevitError(
                f"matvit: granularity {bad[0]!r} is not an index into {self.cfg.granularities} (0..{n - 1})"
            )
        return levels

    @property
    def granularity(self) -> list[int]:
        """The granularity index each block currently runs at."""
        return list(self._levels)

    def set_granularity(self, granularity: int | Sequence[int]) -> None:
        """Run every block (an int) or each block (a list, one per block) at a granularity index.

        Index 0 is the smallest MLP, `len(cfg.granularities) - 1` the full one.
        """
        self._levels = self._resolve(granularity)
        widths = self.cfg.hidden_widths
        for block, g in zip(self.blocks, self._levels, strict=True):
            block.mlp.hidden = widths[g]

    def parameter_count(self, granularity: int | Sequence[int] | None = None) -> int:
        """Parameters of the dense model `extract(granularity)` would return, without building it.

        `None` counts at the current granularity.
        """
        levels = self._levels if granularity is None else self._resolve(granularity)
        full = sum(p.numel() for p in self.parameters())
        dim, widths = self.cfg.embed_dim, self.cfg.hidden_widths
        # Each removed hidden unit drops one fc1 row (dim weights + 1 bias) and one fc2 column (dim weights).
        return full - sum((self.cfg.mlp_hidden - widths[g]) * (2 * dim + 1) for g in levels)

    def extract(self, granularity: int | Sequence[int] | None = None) -> VisionTransformer:
        """Slice out the sub-model at `granularity` (`None`: the current one) as a standalone dense ViT.

        The result is a plain `VisionTransformer` (same timm names; block i's MLP is `h_i` wide) whose
        tensors are copies, so it can be quantized, pruned or exported without touching the nested model.
        """
        levels = self._levels if granularity is None else self._resolve(granularity)
        widths = [self.cfg.hidden_widths[g] for g in levels]
        base = ViTConfig(**{f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(ViTConfig)})
        tag = ".".join(str(g) for g in levels)
        spec = dataclasses.replace(self.spec, variant=f"{self.spec.variant}@{tag}")
        with torch.device("meta"):  # shapes only; the sliced copies are assigned below
            model = VisionTransformer(base, spec)
            for block, h in zip(model.blocks, widths, strict=True):
                block.mlp = Mlp(base.embed_dim, h)
        sd = {}
        for key, value in self.state_dict().items():
            if ".mlp." in key:
                h = widths[int(key.split(".")[1])]
                if ".fc1." in key:
                    value = value[:h]
                elif key.endswith("fc2.weight"):
                    value = value[:, :h]
            sd[key] = value.detach().clone()
        model.load_state_dict(sd, strict=True, assign=True)
        return model.train(self.training)


VARIANTS: dict[str, MatViTConfig] = {
    "ti16_224": MatViTConfig(embed_dim=192, num_heads=3),
    "s16_224": MatViTConfig(embed_dim=384, num_heads=6),
    "b16_224": MatViTConfig(embed_dim=768, num_heads=12),
    # A MatViT small enough to train here in a minute: 32 px digits (or a user's classes) in 4x4 patches.
    "mini_32": MatViTConfig(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=10),
}


def build_matvit(cfg: MatViTConfig, variant: str) -> MatViT:
    task = "classification" if cfg.num_classes > 0 else "features"
    spec = ModelSpec(name="matvit", variant=variant, input_size=(cfg.img_size, cfg.img_size), task=task)
    return MatViT(cfg, spec)


register_family(
    Family(
        name="matvit",
        variants=VARIANTS,
        default_variant="s16_224",
        build=build_matvit,
        description="MatFormer ViT (Ti, S, B at patch 16; mini at 32 px): nested MLPs (1/8..1 wide), Mix'n'Match",
    )
)
