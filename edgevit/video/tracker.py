"""The EfficientTAM video loop, outside the deploy units, driving them through any runner.

It reproduces the official `SAM2VideoPredictor` for one object prompted on one frame (points, a box or a
mask): the same memory-bank selection, object pointers, mask choice and bfloat16 memory storage, but with
a fixed-capacity bank so every unit call has static shapes. A runner is anything that maps the unit's input
tensors to its output tensors — eager PyTorch, or a converted artifact's runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edgevit.errors import EdgevitError
from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.video.mask_selection import select_mask, use_multimask

Runner = Callable[..., Sequence[torch.Tensor]]
UNIT_NAMES = ("image_encoder", "memory_attention", "prompt_mask_decoder", "memory_encoder")


@dataclass(frozen=True)
class Prompt:
    """A first-frame prompt in video pixel coordinates."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()  # 1 positive, 0 negative, one per point
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1
    mask: np.ndarray | None = None  # HxW bool, video resolution

    def validate(self, width: int, height: int, max_points: int) -> None:
        if self.mask is None and not self.points and self.box is None:
            raise EdgevitError("no prompt: give --point X,Y, --box X0,Y0,X1,Y1 or a mask")
        if self.mask is not None and (self.points or self.box is not None):
            raise EdgevitError("a mask prompt cannot be combined with points or a box; give one kind")
        if len(self.labels) != len(self.points):
            raise EdgevitError(f"{len(self.points)} points but {len(self.labels)} labels; give one label per point")
        corners = [(self.box[0], self.box[1]), (self.box[2], self.box[3])] if self.box is not None else []
        for x, y in list(self.points) + corners:
            if not (0 <= x < width and 0 <= y < height):
                raise EdgevitError(
                    f"point ({x:g},{y:g}) is outside the {width}x{height} frame; use 0<=x<{width}, 0<=y<{height}"
                )
        used = len(self.points) + len(corners) + 1  # + the decoder's padding point
        if used > max_points:
            raise EdgevitError(f"{used - 1} prompt points exceed the model's {max_points - 1} prompt slots; give fewer")
        if self.mask is not None:
            if self.mask.shape != (height, width):
                raise EdgevitError(
                    f"mask prompt is {self.mask.shape[1]}x{self.mask.shape[0]}, the video {width}x{height}"
                )
            if not self.mask.any():
                raise EdgevitError("mask prompt is empty; give a mask with at least one foreground pixel")


@dataclass
class FrameResult:
    index: int
    mask_logits: torch.Tensor  # [H,W] at video resolution; > 0 is the object
    object_score: float

    @property
    def mask(self) -> np.ndarray:
        return (self.mask_logits > 0).numpy()


@dataclass
class _Memory:
    features: torch.Tensor  # [1,64,h,w], values rounded to bfloat16 like the official predictor
    obj_ptr: torch.Tensor  # [1,256]


class Tracker:
    def __init__(self, cfg: EfficientTAMConfig, runners: Mapping[str, Runner]) -> None:
        missing = [n for n in UNIT_NAMES if n not in runners]
        if missing:
            raise EdgevitError(f"tracker needs runners for units {missing}")
        self.cfg = cfg
        self.run = runners

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        """RGB uint8 HxWx3 → [1,3,S,S] float in [0,255], resized with PIL as the official loader does."""
        s = self.cfg.image_size
        img = Image.fromarray(frame).convert("RGB").resize((s, s))
        return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()

    def _prompt_slots(self, prompt: Prompt | None, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Fill the decoder's fixed slots the way the official predictor orders its tokens."""
        pts: list[tuple[float, float]] = []
        labels: list[float] = []
        if prompt is not None and prompt.box is not None:
            pts += [(prompt.box[0], prompt.box[1]), (prompt.box[2], prompt.box[3])]
            labels += [2.0, 3.0]
        if prompt is not None:
            pts += list(prompt.points)
            labels += [float(v) for v in prompt.labels]
        num_points = len(pts)
        s = self.cfg.image_size
        xy = torch.tensor(pts, dtype=torch.float32).reshape(-1, 2)
        xy = xy / torch.tensor([width, height], dtype=torch.float32) * s
        if num_points == 0:  # official: a (0,0) point labelled -1 stands in for "no points"
            xy, labels = torch.zeros(1, 2), [-1.0]
        p = self.cfg.max_points
        coords = torch.zeros(1, p, 2)
        coords[0, : xy.shape[0]] = xy
        lab = torch.full((1, p), -2.0)
        lab[0, : len(labels)] = torch.tensor(labels)
        lab[0, len(labels)] = -1.0  # the prompt encoder's own padding point
        return coords, lab, num_points

    def _decode(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_prompt: torch.Tensor,
        mask_weight: float,
        multimask: bool,
    ):
        masks, ious, obj_ptrs, score = self.run["prompt_mask_decoder"](
            feats, coords, labels, mask_prompt, torch.tensor([mask_weight])
        )
        # the unit already projected each token to a pointer, so "choose the token" chooses the pointer
        out = select_mask(
            masks,
            ious,
            obj_ptrs,
            score,
            multimask,
            self.cfg.dynamic_multimask_stability_delta,
            self.cfg.dynamic_multimask_stability_thresh,
        )
        return out.low_res_masks, out.output_token, out.object_score_logits

    def _bank(self, frame: int, cond: tuple[int, _Memory], past: dict[int, _Memory], num_frames: int | None):
        cfg = self.cfg
        f = cfg.feat_size
        memory = torch.zeros(cfg.num_maskmem, cfg.mem_dim, f, f)
        memory_valid = torch.zeros(cfg.num_maskmem)
        cond_idx, cond_mem = cond
        memory[0], memory_valid[0] = cond_mem.features[0], 1.0
        for t_pos in range(1, cfg.num_maskmem):
            prev = past.get(frame - (cfg.num_maskmem - t_pos))
            if prev is not None:
                memory[t_pos], memory_valid[t_pos] = prev.features[0], 1.0
        ptrs = torch.zeros(cfg.max_obj_ptrs, cfg.d_model)
        ptr_valid = torch.zeros(cfg.max_obj_ptrs)
        if cond_idx <= frame:
            ptrs[0], ptr_valid[0] = cond_mem.obj_ptr[0], 1.0
        max_ptrs = cfg.max_obj_ptrs if num_frames is None else min(num_frames, cfg.max_obj_ptrs)
        for t_diff in range(1, max_ptrs):
            if frame - t_diff < 0:
                break
            prev = past.get(frame - t_diff)
            if prev is not None:
                ptrs[t_diff], ptr_valid[t_diff] = prev.obj_ptr[0], 1.0
        return memory, memory_valid, ptrs, ptr_valid

    def _remember(self, feats: torch.Tensor, low_res: torch.Tensor, obj_ptr: torch.Tensor, binarize: bool) -> _Memory:
        (mem,) = self.run["memory_encoder"](feats, low_res, torch.tensor([1.0 if binarize else 0.0]))
        return _Memory(mem.to(torch.bfloat16).to(torch.float32), obj_ptr)

    def track(
        self, frames: Iterable[np.ndarray], prompt: Prompt, num_frames: int | None = None
    ) -> Iterator[FrameResult]:
        """Yield one result per frame; the prompt applies to the first frame."""
        cfg = self.cfg
        s = cfg.image_size
        cond: tuple[int, _Memory] | None = None
        past: dict[int, _Memory] = {}
        keep = max(cfg.num_maskmem, cfg.max_obj_ptrs)
        empty_mask = torch.zeros(1, 1, s, s)
        for idx, frame in enumerate(frames):
            height, width = frame.shape[:2]
            (feats,) = self.run["image_encoder"](self.preprocess(frame))
            if cond is None:
                prompt.validate(width, height, cfg.max_points)
                if prompt.mask is not None:
                    low_res, obj_ptr, score = self._mask_prompt_frame(feats, prompt.mask, width, height)
                else:
                    coords, labels, n = self._prompt_slots(prompt, width, height)
                    no_memory = self._empty_bank()
                    (cond_feats,) = self.run["memory_attention"](feats, *no_memory)
                    low_res, obj_ptr, score = self._decode(
                        cond_feats, coords, labels, empty_mask, 0.0, use_multimask(True, n)
                    )
                cond = (idx, self._remember(feats, low_res, obj_ptr, binarize=True))
            else:
                bank = self._bank(idx, cond, past, num_frames)
                (cond_feats,) = self.run["memory_attention"](feats, *bank)
                coords, labels, n = self._prompt_slots(None, width, height)
                low_res, obj_ptr, score = self._decode(
                    cond_feats, coords, labels, empty_mask, 0.0, use_multimask(False, n)
                )
                past[idx] = self._remember(feats, low_res, obj_ptr, binarize=False)
                past.pop(idx - keep, None)
            video_res = F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)
            yield FrameResult(idx, video_res[0, 0], float(score.reshape(-1)[0]))

    def _empty_bank(self) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        f = cfg.feat_size
        return (
            torch.zeros(cfg.num_maskmem, cfg.mem_dim, f, f),
            torch.zeros(cfg.num_maskmem),
            torch.zeros(cfg.max_obj_ptrs, cfg.d_model),
            torch.zeros(cfg.max_obj_ptrs),
        )

    def _mask_prompt_frame(self, feats: torch.Tensor, mask: np.ndarray, width: int, height: int):
        """Official `_use_mask_as_output`: the mask is the output; the decoder only makes the pointer."""
        s = self.cfg.image_size
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        if (height, width) != (s, s):
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        high = m * 20.0 - 10.0
        low_res = F.interpolate(high, size=(s // 4, s // 4), mode="bilinear", align_corners=False, antialias=True)
        coords, labels, _ = self._prompt_slots(None, width, height)
        _, obj_ptr, _ = self._decode(feats, coords, labels, m, 1.0, multimask=False)
        return low_res, obj_ptr, torch.tensor([[10.0]])
