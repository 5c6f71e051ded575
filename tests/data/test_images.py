"""Images decoded as they are meant to be seen, or refused in one line: 16-bit, palette, alpha, bombs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edgevit.data.images import ALPHA_BACKGROUND, ImageStream, load_image, write_png
from edgevit.errors import EdgevitError


def _one_line_error(path: Path, *words: str) -> str:
    with pytest.raises(EdgevitError) as info:
        load_image(path)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_16_bit_grey_is_scaled_not_clamped(tmp_path):
    values = np.array([[0, 255, 256, 32768, 0x80FF, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"  # PIL's own convert("RGB") would clamp 32768 to 255
    rgb = load_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 6, 3)
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 128, 128, 255]
    assert (rgb == rgb[:, :, :1]).all()  # grey replicated


def test_16_bit_colour_keeps_channel_order_and_scale(tmp_path):
    bgr = np.zeros((1, 2, 3), np.uint16)
    bgr[0, 0] = (0, 32768, 65535)  # opencv writes BGR: this pixel is R=65535, G=32768, B=0
    bgr[0, 1] = (65535, 0, 257)
    path = tmp_path / "colour16.png"
    assert cv2.imwrite(str(path), bgr)
    assert load_image(path).tolist() == [[[255, 128, 0], [1, 0, 255]]]


def test_32_bit_integer_and_float_images_are_refused(tmp_path):
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(wide)
    _one_line_error(wide, "refusing image", "not 16-bit")
    floats = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.5]], np.float32)).save(floats)
    _one_line_error(floats, "refusing image", "float")


def test_palette_goes_through_its_palette(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 100, 50, 1, 2, 3] + [0] * (768 - 9))
    img.putdata([1, 0, 2])
    path = tmp_path / "palette.png"
    img.save(path)
    assert load_image(path).tolist() == [[[200, 100, 50], [10, 20, 30], [1, 2, 3]]]


def test_palette_transparency_is_composited_over_white(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (768 - 6))
    img.putdata([0, 1])
    path = tmp_path / "palette_alpha.png"
    img.save(path, transparency=1)
    assert load_image(path).tolist() == [[[10, 20, 30], list(ALPHA_BACKGROUND)]]


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.array([[[200, 0, 0, 255], [200, 0, 0, 0], [200, 0, 0, 128]]], np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    opaque, clear, half = load_image(path)[0].tolist()
    assert opaque == [200, 0, 0] and clear == [255, 255, 255]
    assert abs(half[0] - 227) <= 1 and abs(half[1] - 127) <= 1 and half[1] == half[2]  # 0.5*200+0.5*255, 0.5*255
    grey_alpha = tmp_path / "la.png"
    Image.fromarray(np.array([[[40, 255], [40, 0]]], np.uint8), "LA").save(grey_alpha)
    assert load_image(grey_alpha).tolist() == [[[40, 40, 40], [255, 255, 255]]]


def _bilevel_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG; at 20000x20000 it is 400 M pixels in a few tens of KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeezer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    pixels = b"".join(squeezer.compress(row) for _ in range(height)) + squeezer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [20000, 10000])  # over twice PIL's limit (it raises), and just over (it warns)
def test_decompression_bomb_is_one_line(tmp_path, side):
    path = _bilevel_png(tmp_path / "bomb.png", side, side)
    assert path.stat().st_size < 200_000
    _one_line_error(path, "refusing image", "decompression bomb", "downscale")


def test_stream_skips_and_records_bad_files(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    _bilevel_png(tmp_path / "bomb.png", 20000, 20000)
    stream = ImageStream(tmp_path, max_images=64)
    means = [float(rgb.mean()) for rgb in stream]
    assert means == [0.0, 40.0, 80.0]
    record = stream.record()
    assert (record["used"], record["skipped"]) == (3, 2)
    bomb, broken = record["skipped_examples"]  # sorted by name: bomb.png, broken.png
    assert "bomb.png" in bomb and "decompression bomb" in bomb and str(tmp_path) not in bomb
    assert "broken.png" in broken and "cannot read image" in broken
    with pytest.raises(EdgevitError, match=r"gave 3 image\(s\) \(2 unreadable, e.g. bomb.png\)"):
        stream.require(4)


def test_write_png_that_fails_is_an_error(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    write_png(tmp_path / "ok.png", mask)
    assert (tmp_path / "ok.png").stat().st_size > 0
    with pytest.raises(EdgevitError, match="could not write the image"):
        write_png(tmp_path / "missing" / "mask.png", mask)


def test_calibration_records_images_used_and_skipped(tmp_path):
    from edgevit.models import create
    from edgevit.unit_data import unit_batches

    for i in range(11):
        Image.fromarray(np.full((40, 50, 3), 20 * i, np.uint8)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "deep.png")  # 16-bit: used, not skipped
    Image.fromarray(np.zeros((2, 2), np.float32)).save(tmp_path / "float.tif")
    model = create("vit", "ti16_224", depth=2, img_size=64, num_classes=10)
    batches, info = unit_batches(model, str(tmp_path))
    assert (info["used"], info["skipped"]) == (12, 2)
    assert info["images"] + info["held_out_for_parity"] == 12 == len(batches[0].calib) + len(batches[0].held_out)
    broken, floats = info["skipped_examples"]
    assert broken.startswith("cannot read image broken.png") and "float.tif" in floats and "float" in floats
