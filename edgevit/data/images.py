"""Images for calibration and evaluation: a user's folder, a video's frames, or real photos packages ship.

Calibration needs real images: the ranges a quantizer learns on noise are not the ranges a photo produces
(a ViT's LayerNorm outliers appear only on natural-image statistics). With no data of the user's own, the
photos bundled in scikit-image's wheel (and scikit-learn's two, when installed) are real, offline and
varied enough: people, animals, objects, space, microscopy, textures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from edgevit.errors import EdgevitError
from edgevit.models.spec import ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# Bundled files of scikit-image 0.2x that are photographs (others are synthetic or fetched over the network),
# colour first; grey ones are replicated to three channels.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "page.png",
    "text.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "cell.png",
    "clock_motion.png",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def _package_dir(package: str) -> Path | None:
    """A package's folder, found without importing it (skimage and sklearn imports cost seconds)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_photos() -> list[Path]:
    """Paths of the real photos installed packages ship, scikit-image's first."""
    skimage = _package_dir("skimage")
    if skimage is None:
        raise EdgevitError(
            "built-in calibration photos need scikit-image: pip install scikit-image (or pass --calib DIR)"
        )
    found = [skimage / "data" / name for name in SKIMAGE_PHOTOS]
    sklearn = _package_dir("sklearn")
    if sklearn is not None:
        found += [sklearn / "datasets" / "images" / name for name in SKLEARN_PHOTOS]
    return [p for p in found if p.is_file()]


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name so a calibration run is repeatable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgevitError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 HxWx3 (grey replicated, alpha dropped); raises EdgevitError when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise EdgevitError(f"cannot read image {path}: {exc}") from None


def preprocess(rgb: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """`1x3xHxW` float32 the way the model expects it: shorter side resized to fit, centre crop, mean/std.

    Resize-then-crop keeps the aspect ratio (a squashed photo has statistics no camera produces).
    """
    from PIL import Image

    height, width = spec.input_size
    h, w = rgb.shape[:2]
    ratio = max(height / h, width / w)
    size = (max(width, round(w * ratio)), max(height, round(h * ratio)))
    resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))
    top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    crop = resized[top : top + height, left : left + width].astype(np.float32) / 255.0
    x = (crop - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    """`count` frames spread evenly over the video (neighbouring frames are near duplicates)."""
    from edgevit.data.video import read_frames, video_info

    total = video_info(path)[0]
    step = max(1, total // count) if total > 0 else 1
    return [frame for i, frame in enumerate(read_frames(path)) if i % step == 0][:count]


def load_images(source: str | Path, spec: ModelSpec, *, min_images: int, max_images: int) -> list[torch.Tensor]:
    """Preprocessed images from "builtin", a folder of images, or a video file; at least `min_images`."""
    return [preprocess(a, spec) for a in load_rgb(source, min_images=min_images, max_images=max_images)]


def load_rgb(source: str | Path, *, min_images: int, max_images: int) -> list[np.ndarray]:
    """RGB uint8 frames from "builtin", a folder of images, or a video file; at least `min_images`.

    Unreadable files in a folder are skipped, not fatal (folders collect thumbnails and stray files), but
    the error for too few images says how many were skipped so the user sees why.
    """
    source_path = Path(source)
    skipped: list[Path] = []
    if str(source) == "builtin":
        arrays = [load_image(p) for p in builtin_photos()[:max_images]]
        where = "the built-in photos"
    elif source_path.is_dir():
        arrays = []
        for path in image_files(source_path):
            if len(arrays) == max_images:
                break
            try:
                arrays.append(load_image(path))
            except EdgevitError:
                skipped.append(path)
        where = str(source_path)
    elif source_path.is_file() and source_path.suffix.lower() in VIDEO_SUFFIXES:
        arrays = _video_frames(source_path, max_images)
        where = str(source_path)
    elif source_path.exists():
        raise EdgevitError(
            f"{source_path} is neither a folder of images nor a video ({', '.join(VIDEO_SUFFIXES)}); "
            "pass a folder, a video or 'builtin'"
        )
    else:
        raise EdgevitError(f"calibration source {str(source)!r} does not exist; pass a folder, a video or 'builtin'")
    if len(arrays) < min_images:
        note = f" ({len(skipped)} unreadable, e.g. {skipped[0].name})" if skipped else ""
        raise EdgevitError(
            f"{where} gave {len(arrays)} image(s){note}; calibration needs at least {min_images}: add images"
        )
    return arrays
