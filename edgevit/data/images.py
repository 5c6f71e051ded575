"""Images for calibration and evaluation: a user's folder, a video's frames, or real photos packages ship.

Calibration needs real images: the ranges a quantizer learns on noise are not the ranges a photo produces
(a ViT's LayerNorm outliers appear only on natural-image statistics). With no data of the user's own, the
photos bundled in scikit-image's wheel (and scikit-learn's two, when installed) are real, offline and
varied enough: people, animals, objects, space, microscopy, textures.

Every image is decoded to RGB uint8 the way it is meant to be seen (16-bit scaled, palettes applied, alpha
composited) or refused with a reason, and sources are streamed: a caller keeps what it derives from each image
(a preprocessed tensor), not every decoded photo.
"""

from __future__ import annotations

import importlib.util
import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become what a viewer shows on a white page
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PIL opens 16-bit grey PNGs and TIFFs as these


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 HxWx3; raises a one-line EdgevitError when the file cannot be decoded or is refused.

    - 16-bit grey (PIL modes I;16*, or I holding 0..65535) is scaled to 8 bits by `>> 8` (65535 → 255,
      32768 → 128), not clamped at 255 as PIL's own convert does; 16-bit colour PNGs PIL already reads as their
      high bytes. Integer images outside 0..65535 and float images (mode F) are refused: their range is unknown.
    - Palette images go through their palette (and its transparency).
    - Alpha (RGBA, LA, PA, a palette's or grey's transparent colour) is composited over white
      (`ALPHA_BACKGROUND`), so a transparent region is the white a viewer shows, not whatever colour the
      encoder left under it. A 16-bit grey image's transparent key is ignored.
    - Grey is replicated to three channels; an animated image gives its first frame.
    - A decompression bomb (more pixels than PIL's `Image.MAX_IMAGE_PIXELS`, where PIL only warns, or twice
      that, where it raises) is refused before its pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return _rgb8(img, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise EdgevitError(
            f"refusing image {path}: {exc} (a decompression bomb?); downscale it below {Image.MAX_IMAGE_PIXELS} pixels"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise EdgevitError(f"cannot read image {path}: {exc}") from None


def _rgb8(img: Any, path: Path) -> np.ndarray:
    """An open PIL image as RGB uint8, converted as `load_image` documents."""
    from PIL import Image

    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img)
        if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
            raise EdgevitError(
                f"refusing image {path}: {img.mode} values span {values.min()}..{values.max()}, not 16-bit "
                "0..65535, so their brightness is unknown; save it as an 8- or 16-bit image"
            )
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise EdgevitError(
            f"refusing image {path}: 32-bit float pixels have no fixed brightness range; "
            "save it as an 8- or 16-bit image"
        )
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def write_png(path: Path, image: np.ndarray) -> None:
    """Write `image` (HxW grey or HxWx3 BGR, uint8) with opencv, which reports a failure only as False."""
    import cv2

    if not cv2.imwrite(str(path), image):
        raise EdgevitError(f"opencv could not write the image {path}; check the folder exists and is writable")


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


def _video_frames(path: Path, count: int) -> Iterator[np.ndarray]:
    """`count` frames spread evenly over the video (neighbouring frames are near duplicates), decoded one by one.

    The spacing comes from the container's claimed frame count; when it claims more than there are, fewer
    frames come out, and the count a caller records is the number that did.
    """
    from edgevit.data.video import read_frames, video_info

    claimed = video_info(path)[0]
    step = max(1, claimed // count) if claimed > 0 else 1
    frames = read_frames(path)
    try:
        yield from itertools.islice((frame for i, frame in enumerate(frames) if i % step == 0), count)
    finally:
        frames.close()  # release the capture now, not when the generator is collected


class ImageStream:
    """RGB uint8 images from "builtin", a folder of images, or a video file, decoded one at a time.

    Iterating it decodes at most `max_images` images and tallies what was used and what was skipped:
    unreadable files in a folder are skipped, not fatal (folders collect thumbnails and stray files), and
    `record()` says how many and why, for the bundle's manifest. The source is checked on construction.
    """

    def __init__(self, source: str | Path, max_images: int) -> None:
        self.source = str(source)
        self.max_images = max_images
        self.used = 0
        self.skipped: list[tuple[str, str]] = []  # (file name, the error that refused it)
        path = Path(source)
        if self.source == "builtin":
            self.where, self._files = "the built-in photos", builtin_photos()
        elif path.is_dir():
            self.where, self._files = str(path), image_files(path)
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            self.where, self._files = str(path), None
        elif path.exists():
            raise EdgevitError(
                f"{path} is neither a folder of images nor a video ({', '.join(VIDEO_SUFFIXES)}); "
                "pass a folder, a video or 'builtin'"
            )
        else:
            raise EdgevitError(
                f"calibration source {self.source!r} does not exist; pass a folder, a video or 'builtin'"
            )

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._files is None:
            for frame in _video_frames(Path(self.source), self.max_images):
                self.used += 1
                yield frame
            return
        for path in self._files:
            if self.used == self.max_images:
                return
            try:
                rgb = load_image(path)
            except EdgevitError as exc:
                self.skipped.append((path.name, str(exc).replace(str(path), path.name)))
                continue
            self.used += 1
            yield rgb

    def require(self, min_images: int) -> None:
        """Raise, saying how many files were skipped, when fewer than `min_images` were used."""
        if self.used < min_images:
            note = f" ({len(self.skipped)} unreadable, e.g. {self.skipped[0][0]})" if self.skipped else ""
            raise EdgevitError(
                f"{self.where} gave {self.used} image(s){note}; calibration needs at least {min_images}: add images"
            )

    def record(self, examples: int = 3) -> dict[str, Any]:
        """What the manifest keeps: images used, files skipped, and the first few skipped with their reason."""
        return {
            "used": self.used,
            "skipped": len(self.skipped),
            "skipped_examples": [why for _, why in self.skipped[:examples]],
        }


def load_images(
    source: str | Path, spec: ModelSpec, *, min_images: int, max_images: int
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Preprocessed images from `source` (see `ImageStream`), at least `min_images`, and the stream's record.

    Each image is preprocessed as it is decoded: only the small model-sized tensors are kept.
    """
    stream = ImageStream(source, max_images)
    images = [preprocess(rgb, spec) for rgb in stream]
    stream.require(min_images)
    return images, stream.record()


def load_rgb(source: str | Path, *, min_images: int, max_images: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """RGB uint8 images from `source` (see `ImageStream`), at least `min_images`, and the stream's record."""
    stream = ImageStream(source, max_images)
    arrays = list(stream)
    stream.require(min_images)
    return arrays, stream.record()
