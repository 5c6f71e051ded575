"""J and F as DAVIS defines them, on masks whose answer is worked out by hand, and the DAVIS folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.davis import (
    DavisError,
    boundary_f,
    boundary_map,
    read_davis,
    region_j,
    sequence_scores,
    tolerance_px,
)


def square(shift: int = 0) -> np.ndarray:
    """A 40x40 square (rows and columns 30..69) in a 100x100 frame, moved `shift` pixels right."""
    mask = np.zeros((100, 100), dtype=bool)
    mask[30:70, 30 + shift : 70 + shift] = True
    return mask


def test_j_of_a_shifted_square_is_overlap_over_union():
    assert region_j(square(6), square()) == pytest.approx((34 * 40) / (46 * 40))  # 0.7391
    assert region_j(square(), square()) == 1.0
    assert region_j(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0  # both empty: agree
    assert region_j(square(60), square()) == 0.0


def test_boundary_is_the_ring_davis_draws():
    ring = boundary_map(square())
    # inside pixels on the right column and bottom row, outside pixels left of and above the square: the
    # perimeter of the 41x41 square with corners (29, 29) and (69, 69)
    assert ring.sum() == 4 * 40
    assert ring[29, 29:70].all() and ring[69, 29:70].all() and ring[29:70, 29].all() and ring[29:70, 69].all()
    assert not ring[30:69, 30:69].any()


def test_f_matches_boundaries_within_the_tolerance_and_no_further():
    assert tolerance_px((100, 100)) == 2  # ceil(0.008 * 141.4)
    assert boundary_f(square(2), square()) == 1.0  # every boundary pixel within 2 px of the other
    # shifted 6 px: of each 160-pixel ring, the top and bottom rows match over 35 + 2 pixels each, the near
    # vertical side only where it is within 2 px of a row (2 + 2): 78 / 160 both ways
    assert boundary_f(square(6), square()) == pytest.approx(78 / 160)
    assert boundary_f(square(3), square()) == pytest.approx(84 / 160)
    assert boundary_f(square(60), square()) == 0.0
    assert boundary_f(np.zeros((100, 100), bool), square()) == 0.0


def test_sequence_scores_leave_out_the_first_and_last_frames():
    truths = [square(), square(), square(), None, square()]
    predictions = [np.zeros((100, 100), bool), square(6), square(2), square(), np.zeros((100, 100), bool)]
    scores = sequence_scores(predictions, truths)
    assert scores["frames_scored"] == 2  # frames 1 and 2 (3 has no annotation; 0 and 4 are left out)
    assert scores["J"] == pytest.approx((34 / 46 + 38 / 42) / 2)
    assert scores["F"] == pytest.approx((78 / 160 + 1.0) / 2)
    assert scores["J&F"] == pytest.approx((scores["J"] + scores["F"]) / 2)
    assert scores["per_frame_J"][0] == 0.0 and scores["per_frame_J"][3] is None


def write_davis(root: Path, masks: list[np.ndarray], name: str = "square") -> None:
    """A DAVIS-layout folder: JPEG frames (the masks drawn bright on dark) and palette PNG annotations with the
    object ids in `masks` (0 background)."""
    images, notes = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
    images.mkdir(parents=True)
    notes.mkdir(parents=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    for i, ids in enumerate(masks):
        Image.fromarray(np.where(ids[..., None] > 0, 220, 30).repeat(3, axis=2).astype(np.uint8)).save(
            images / f"{i:05d}.jpg"
        )
        note = Image.fromarray(ids.astype(np.uint8), mode="P")
        note.putpalette(palette)
        note.save(notes / f"{i:05d}.png")


def test_davis_folder_reads_object_ids_from_palette_pngs(tmp_path):
    two = square().astype(np.uint8)
    two[:10, :10] = 2
    write_davis(tmp_path, [two, two, two])
    (seq,) = read_davis(tmp_path)
    assert seq.name == "square" and len(seq.frames) == 3 and seq.first_objects() == [1, 2]
    assert (seq.truth(1, 1) == square()).all() and seq.truth(1, 2).sum() == 100
    with pytest.raises(DavisError, match="not in DAVIS layout"):
        read_davis(tmp_path / "JPEGImages")
