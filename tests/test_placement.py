"""Synthetic volumes on real scans' fields of view: measuring, drawing and applying a placement, and the
memorization check that looks through it (cgan_ct.synthesis.placement, cgan_ct.ops.regrid)."""

from __future__ import annotations

import numpy as np
import pytest

from cgan_ct.demo.phantom import make_phantom
from cgan_ct.ops.regrid import Regrid
from cgan_ct.realism.memorization_report import memorization_report
from cgan_ct.synthesis.placement import (
    OFFSET_JITTER_MM,
    SPACING_JITTER,
    Placement,
    body_geometry,
    body_offset_mm,
    draw,
    measure,
    place_coarse,
)


def _disc(size=64, centre=(40.0, 28.0), radius=10.0, slices=8, body_hu=40.0):
    """Air with a disc of ``body_hu`` (radius in pixels) in every slice."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    return np.broadcast_to(np.where(inside, body_hu, -1000.0), (slices, size, size)).astype(np.float32)


def _area_mm2(hu, spacing):
    return float((hu[len(hu) // 2] > -500).sum() * spacing[0] * spacing[1])


def test_the_body_offset_is_its_centre_from_the_image_centre_in_mm():
    offset = body_offset_mm(_disc(), (0.5, 0.8))
    assert offset == pytest.approx(((40 - 31.5) * 0.5, (28 - 31.5) * 0.8), abs=0.05)
    # the largest region counts: a small dense object (a table) beside the body does not move it
    hu = _disc().copy()
    hu[:, 60:63, 2:20] = 200.0
    assert body_offset_mm(hu, (0.5, 0.8)) == pytest.approx(offset, abs=0.05)
    assert body_offset_mm(np.full((8, 64, 64), -1000.0), (0.5, 0.5)) is None
    assert measure(np.full((8, 64, 64), -1000.0), (0.5, 0.5)) is None
    placement = measure(_disc(), (0.5, 0.8))
    assert placement.spacing_mm == (0.5, 0.8) and placement.offset_mm == offset
    assert body_geometry(_disc(), (1, 1))[1] == pytest.approx(np.pi * 100 / 64**2, rel=0.05)
    # a body's fill is its outline's: air inside it (the lungs) counts as body
    chest = _disc().copy()
    chest[:, 36:44, 24:32] = -850.0
    assert body_geometry(chest, (1, 1))[1] == body_geometry(_disc(), (1, 1))[1]


def test_a_coarse_draw_is_moved_to_the_placement_by_whole_pixels_and_keeps_its_size():
    """The coarse draw's body centre lands nearest the placement's offset on the finished grid (pixels 2**levels
    times smaller than the coarse ones), moved by whole pixels: its voxels are the draw's own, air where it left
    an edge; its size in pixels (its share of the image) is kept."""
    coarse_spacing, levels = (6.0, 6.0), 3
    hu = _disc(radius=10.0, centre=(35.0, 30.0))
    drawn_offset, drawn_fill = body_geometry(hu, coarse_spacing)
    for target in (Placement((0.7, 0.7), (12.0, -20.0)), Placement((0.9, 0.9), (-30.0, 41.0))):
        placed = place_coarse(hu, coarse_spacing, target, levels)
        assert placed.shape == hu.shape and placed.dtype == np.float32
        pixel = [s * 2**levels for s in target.spacing_mm]  # the coarse pixel on the placement's grid
        offset, fill = body_geometry(placed, pixel)
        assert np.all(np.abs(np.subtract(offset, target.offset_mm)) <= np.array(pixel) / 2 + 1e-6)
        assert fill == drawn_fill  # the same pixels, moved
        assert set(np.unique(placed)) <= set(np.unique(hu)) | {-1024.0}  # nothing interpolated; air comes in
    # the offset already where it lies: nothing moves
    here = Placement((6.0 / 2**levels, 6.0 / 2**levels), drawn_offset)
    np.testing.assert_array_equal(place_coarse(hu, coarse_spacing, here, levels), hu)
    # no body in the draw: nothing to move
    empty = np.full((8, 64, 64), -1000.0, np.float32)
    np.testing.assert_array_equal(place_coarse(empty, coarse_spacing, target, levels), empty)


def test_a_regrid_to_the_same_grid_changes_nothing():
    hu = make_phantom(1, 4, 64).hu.astype(np.float32)
    np.testing.assert_allclose(Regrid((0.8, 0.8), (0.8, 0.8), 64).apply(hu), hu, atol=0.05)


def test_draws_take_a_chosen_scans_grid_moved_a_little():
    """A drawn grid: one training scan's, chosen by the seed, its spacing and body offset each moved within its
    jitter; the same for the same seed."""
    placements = [Placement((0.6, 0.6), (10.0, -5.0)), Placement((0.9, 0.8), (45.0, 0.0))]
    assert draw(placements, 7) == draw(placements, 7)
    chosen = set()
    for seed in range(200):
        drawn = draw(placements, seed)
        base = min(placements, key=lambda p: abs(np.log(drawn.spacing_mm[0] / p.spacing_mm[0])))
        chosen.add(base)
        factor = drawn.spacing_mm[0] / base.spacing_mm[0]
        assert np.exp(-SPACING_JITTER) <= factor <= np.exp(SPACING_JITTER)
        assert drawn.spacing_mm[1] == pytest.approx(base.spacing_mm[1] * factor)  # the pixel's shape kept
        assert np.all(np.abs(np.subtract(drawn.offset_mm, base.offset_mm)) <= OFFSET_JITTER_MM)
    assert chosen == set(placements)
    assert len({draw(placements, seed) for seed in range(20)}) == 20
    with pytest.raises(ValueError, match="no placements"):
        draw([], 0)


def test_a_placement_is_checked_and_round_trips():
    placement = Placement((0.7031, 0.7031), (9.9, -4.6))
    assert Placement.from_json(placement.to_json()) == placement
    # a record of the first scheme (stop 63) also held the body's fill: read, not used
    assert Placement.from_json({**placement.to_json(), "body_fill": 0.45}) == placement
    for spacing, offset in [((0.0, 1.0), (0, 0)), ((1.0,), (0, 0)), ((1.0, 1.0), (np.nan, 0))]:
        with pytest.raises(ValueError, match="placement"):
            Placement(spacing, offset)


def test_a_placed_copy_of_training_voxels_escapes_the_memorization_check():
    """Why the synthesis report searches placed volumes' draws again on the cascade's grid: a copy of a training
    block is flagged there, and after placing (0.75 -> 0.9 mm, back on the cascade's grid or not) it is not."""
    training = [make_phantom(seed, 24, 64, pixel_mm=0.75).hu for seed in (0, 1)]
    heldout = [make_phantom(seed, 24, 64, pixel_mm=0.75).hu for seed in (2, 3)]
    honest = make_phantom(5, 24, 64, pixel_mm=0.75).hu
    drawn = make_phantom(4, 24, 64, pixel_mm=0.75).hu.copy()
    drawn[:, 16:48, 16:48] = training[0][:, 16:48, 16:48]  # a copy on the cascade's grid
    placed = np.rint(Regrid((0.75, 0.75), (0.9, 0.9), 64).apply(drawn)).astype(np.int16)
    back = np.rint(Regrid((0.9, 0.9), (0.75, 0.75), 64).apply(placed)).astype(np.int16)
    found = memorization_report([honest, drawn], training, heldout, block=16)
    assert found.flagged and {b.synthetic_volume for b in found.flagged} == {1}
    for resampled in (placed, back):
        assert not memorization_report([honest, resampled], training, heldout, block=16).flagged
