"""Reader study kit: slice picking, windowed rendering, blinding, the key (no browser here; the page is
test_reader_page's, scoring test_reader_score's, the two programs test_reader_study_cli's)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from cgan_ct import InputError, write_nifti
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.study import reader_study as rs
from tests.dicom_factory import write_ct_series
from tests.reader_helpers import build, folder_files

NAME = re.compile(r"^[0-9a-f]{16}\.png$")


# --- picking -----------------------------------------------------------------------------------------------


def test_pick_slices_spread_distinct_and_at_matching_relative_z():
    picks = rs.pick_slices(64, 32, 10, np.random.default_rng(0))
    real = [k for k, _, _ in picks]
    assert len(set(real)) == 10 and real == sorted(real)
    assert min(real) >= 3 and max(real) <= 60  # 5% of 64 slices left out at each end
    bounds = [int(3 + i * 5.8) for i in range(10)] + [61]  # the usable range cut in ten strata
    assert all(start <= k < stop for k, start, stop in zip(real, bounds[:-1], bounds[1:], strict=True))
    for k, g, z in picks:
        assert z == pytest.approx((k + 0.5) / 64)
        assert g == int(z * 32)  # the generated slice whose extent holds the same relative z


def test_pick_slices_same_depth_is_same_index_and_deterministic():
    first = rs.pick_slices(40, 40, 7, np.random.default_rng(3))
    assert first == rs.pick_slices(40, 40, 7, np.random.default_rng(3))
    assert all(k == g for k, g, _ in first)
    assert first != rs.pick_slices(40, 40, 7, np.random.default_rng(4))


def test_pick_slices_refuses_more_pairs_than_slices():
    assert len(rs.pick_slices(20, 20, 18, np.random.default_rng(0))) == 18  # 20 less one slice each end
    with pytest.raises(ValueError, match="19 slice pairs asked of a volume with 18 usable slices"):
        rs.pick_slices(20, 20, 19, np.random.default_rng(0))


def test_allot_spreads_pairs_evenly_over_volume_pairs():
    counts = rs.allot(20, 3, np.random.default_rng(0))
    assert sum(counts) == 20 and sorted(counts) == [6, 7, 7]
    assert rs.allot(2, 5, np.random.default_rng(0)).count(0) == 3


# --- rendering ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "hu", "grey"),
    [
        ("lung", [-2000, -1350, -600, 150, 3000], [0, 0, 128, 255, 255]),
        ("mediastinum", [-1000, -160, 40, 240, 1000], [0, 0, 128, 255, 255]),
        ("lung", [-1000, 0], [60, 230]),  # (-1000 + 1350) / 1500 * 255 = 59.5; 1350 / 1500 * 255 = 229.5
    ],
)
def test_windows_are_w1500_l_minus600_and_w400_l40(window, hu, grey):
    assert rs.window_uint8(np.array(hu), rs.WINDOWS[window]).tolist() == grey


def _disk(shape, pixel_mm, radius_mm):
    """HU slice: a 40 HU disk of radius_mm at the centre of a -1000 HU field, on pixels of pixel_mm (y, x)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    y = (yy + 0.5 - shape[0] / 2) * pixel_mm[0]
    x = (xx + 0.5 - shape[1] / 2) * pixel_mm[1]
    return np.where(y**2 + x**2 <= radius_mm**2, 40, -1000).astype(np.int16)


def _extent(image):
    rows, cols = np.nonzero(image > 64)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_fit_slice_keeps_aspect_of_anisotropic_pixels():
    image = _disk((100, 50), (1.0, 2.0), 30)  # 100 x 100 mm on 1 x 2 mm pixels
    fitted = rs.fit_slice(image, (1.0, 2.0), 100 / 128, 128)
    assert fitted.shape == (128, 128)
    height, width = _extent(rs.window_uint8(fitted, rs.WINDOWS["mediastinum"]))
    # 60 mm both ways (2 mm source pixels across allow 2.6 display pixels); stretched 1 x 2 mm pixels would be 38 wide
    assert abs(height - width) <= 3 and height == pytest.approx(60 * 128 / 100, abs=2)


def test_fit_slice_pads_with_the_slice_border_value():
    image = np.full((40, 80), -3024, np.int16)  # outside-FOV value, 40 x 80 mm at 1 mm
    fitted = rs.fit_slice(image, (1.0, 1.0), 80 / 64, 64)
    assert np.all(fitted == -3024)


def test_render_pair_puts_both_slices_on_one_scale():
    real = _disk((128, 128), (1.0, 1.0), 40)
    generated = _disk((64, 64), (2.0, 2.0), 40)  # same anatomy, coarser matrix
    images = rs.render_pair(real, (1.0, 1.0), generated, (2.0, 2.0), rs.WINDOWS["mediastinum"], 128)
    assert [im.shape for im in images] == [(128, 128), (128, 128)] and images[0].dtype == np.uint8
    (h0, w0), (h1, w1) = (_extent(im) for im in images)
    assert abs(h0 - h1) <= 2 and abs(w0 - w1) <= 2 and h0 == pytest.approx(80, abs=2)


def test_render_pair_at_native_size_leaves_pixels_untouched():
    hu = np.random.default_rng(0).integers(-1100, 300, (64, 64)).astype(np.int16)
    real, _ = rs.render_pair(hu, (0.8, 0.8), hu, (0.8, 0.8), rs.WINDOWS["lung"], 64)
    assert np.array_equal(real, rs.window_uint8(hu, rs.WINDOWS["lung"]))


# --- the study ---------------------------------------------------------------------------------------------


def test_layout_key_outside_the_study_folder(reader_volumes, tmp_path):
    study = build(reader_volumes, tmp_path / "out")
    assert study.page == tmp_path / "out" / "study" / "index.html" and study.key == tmp_path / "out" / "key.json"
    assert study.trials == 12 and study.seed == 7
    files = folder_files(tmp_path / "out" / "study")
    assert set(files) == {"index.html"} | {f"img/{n}" for n in (p.name for p in (study.page.parent / "img").iterdir())}
    key = json.loads(study.key.read_text())
    assert [t["trial"] for t in key["trials"]] == list(range(1, 13))
    images = {n for t in key["trials"] for n in (t["left_image"], t["right_image"])}
    assert {f"img/{n}" for n in images} == set(files) - {"index.html"} and len(images) == 24
    for window in ("lung", "mediastinum"):  # each slice pair in both windows, real sides balanced per window
        rows = [t for t in key["trials"] if t["window"] == window]
        assert len(rows) == 6 and sum(t["real_side"] == "left" for t in rows) == 3
        assert len({t["real_slice"] for t in rows}) == 6
    for name in images:
        with Image.open(study.page.parent / "img" / name) as image:
            assert image.mode == "L" and image.size == (96, 96) and not image.text


def _slices(study):
    return sorted((t["real_slice"], t["window"]) for t in json.loads(study.key.read_text())["trials"])


def test_both_seeds_given_rebuild_the_study_exactly(reader_volumes, tmp_path):
    a, b = (build(reader_volumes, tmp_path / name, seed=7, blinding_seed=99) for name in ("a", "b"))
    assert folder_files(a.page.parent) == folder_files(b.page.parent)
    assert json.loads(a.key.read_text()) == json.loads(b.key.read_text())
    c = build(reader_volumes, tmp_path / "c", seed=8, blinding_seed=99)
    assert _slices(c) != _slices(a)


def test_seed_chooses_slices_blinding_is_fresh_and_recorded(reader_volumes, tmp_path):
    a, b = (build(reader_volumes, tmp_path / name, seed=7, blinding_seed=None) for name in ("a", "b"))
    assert _slices(a) == _slices(b)  # same seed: the same slices, e.g. for two generators
    key_a, key_b = (json.loads(s.key.read_text()) for s in (a, b))
    assert a.blinding_seed != b.blinding_seed and a.blinding_seed >= 2**64  # 128 random bits, almost surely
    assert key_a["blinding_seed"] == str(a.blinding_seed) and key_a["seed"] == 7
    assert key_a["study_id"] != key_b["study_id"]
    assert set(folder_files(a.page.parent)) & set(folder_files(b.page.parent)) == {"index.html"}
    shown = [[(t["real_slice"], t["window"], t["real_side"]) for t in k["trials"]] for k in (key_a, key_b)]
    assert shown[0] != shown[1]  # order and sides drawn afresh (equal by chance once in 12! at most)
    rebuilt = build(reader_volumes, tmp_path / "c", seed=7, blinding_seed=int(key_a["blinding_seed"]))
    assert folder_files(rebuilt.page.parent) == folder_files(a.page.parent)


def test_real_image_is_written_on_the_keyed_side(reader_volumes, tmp_path):
    study = build(reader_volumes, tmp_path / "out", window="lung", pairs=4, size_px=96)
    real = make_phantom(1, 16, 96)
    for t in json.loads(study.key.read_text())["trials"]:
        expected = rs.window_uint8(real.hu[t["real_slice"]], rs.WINDOWS["lung"])
        shown = {
            side: np.asarray(Image.open(study.page.parent / "img" / t[f"{side}_image"])) for side in ("left", "right")
        }
        assert np.array_equal(shown[t["real_side"]], expected)
        other = "right" if t["real_side"] == "left" else "left"
        assert not np.array_equal(shown[other], expected)


def test_flipping_sides_swaps_image_contents_but_not_names_or_page(reader_volumes, tmp_path, monkeypatch):
    normal = build(reader_volumes, tmp_path / "a")
    original = rs._balanced_sides

    def flipped(count, rng):
        return ["left" if s == "right" else "right" for s in original(count, rng)]

    monkeypatch.setattr(rs, "_balanced_sides", flipped)
    swapped = build(reader_volumes, tmp_path / "b")
    assert normal.page.read_text() == swapped.page.read_text()
    for t in json.loads(normal.key.read_text())["trials"]:
        a, b = (study.page.parent / "img" for study in (normal, swapped))
        assert (a / t["left_image"]).read_bytes() == (b / t["right_image"]).read_bytes()


def test_image_names_do_not_predict_the_real_side(reader_volumes, tmp_path):
    study = build(reader_volumes, tmp_path / "out", pairs=14, window="both", size_px=64)
    trials = json.loads(study.key.read_text())["trials"]
    assert all(NAME.match(t[f"{side}_image"]) for t in trials for side in ("left", "right"))
    smaller_is_real = sum((t["left_image"] < t["right_image"]) == (t["real_side"] == "left") for t in trials)
    assert stats.binomtest(smaller_is_real, len(trials)).pvalue > 0.05
    page_order = [t["left_image"] for t in trials]
    assert page_order != sorted(page_order)


def test_nothing_identifying_in_the_study(tmp_path):
    hu = make_phantom(2, 12, 64).hu
    tags = {"PatientName": "Doe^Jane", "PatientID": "MRN-448812", "StudyDate": "20240117", "AccessionNumber": "A99"}
    paths = write_ct_series(tmp_path / "DOE_JANE_20240117", hu, tags=tags, series_uid="1.2.826.0.1.3680043.8.99.1")
    generated = tmp_path / "gen_DOE_JANE.nii.gz"
    write_nifti(rs.read_volume(paths[0].parent), generated)
    study = rs.build_study(paths[0].parent, generated, tmp_path / "out", pairs=3, seed=1, size_px=64)
    volume = rs.read_volume(paths[0].parent)
    # image names are 16 random hex digits (checked here), which can hold "a99" or "2024" by chance
    # (seen: 9905a995b25bcc2d.png): take them out of the text before looking for the secrets in it
    images = [p.name for p in (study.page.parent / "img").iterdir()]
    assert images and all(NAME.match(name) for name in images)
    assert sorted(p.name for p in study.page.parent.iterdir()) == ["img", "index.html"]
    text = study.page.read_text()
    for name in images:
        text = text.replace(name, "IMAGE.png")
    for secret in ("Doe", "Jane", "MRN-448812", "20240117", "2024", "1.2.826", "A99", "DOE_JANE", "gen_"):
        assert secret.lower() not in text.lower()
    assert volume.volume_id not in text and volume.patient_key not in text
    for png in (study.page.parent / "img").iterdir():
        with Image.open(png) as image:
            assert set(image.info) <= {"dpi"}, image.info


def test_folders_of_volumes_pair_by_sorted_order(tmp_path):
    for folder in ("real", "gen"):
        (tmp_path / folder).mkdir()
    for i, seed in enumerate((3, 4)):
        volume = make_phantom(seed, 10 + 4 * i, 64)
        write_nifti(volume, tmp_path / "real" / f"case{i}.nii.gz")
        write_nifti(volume, tmp_path / "gen" / f"case{i}_synthetic.nii.gz")
    (tmp_path / "real" / "notes.txt").write_text("not a volume")
    study = rs.build_study(tmp_path / "real", tmp_path / "gen", tmp_path / "out", pairs=5, seed=2, size_px=64)
    key = json.loads(study.key.read_text())
    reals = [rs.read_volume(tmp_path / "real" / f"case{i}.nii.gz") for i in (0, 1)]
    generateds = [rs.read_volume(tmp_path / "gen" / f"case{i}_synthetic.nii.gz") for i in (0, 1)]
    assert [p["real_volume_id"] for p in key["volume_pairs"]] == [v.volume_id for v in reals]
    assert [p["generated_volume_id"] for p in key["volume_pairs"]] == [v.volume_id for v in generateds]
    assert "case" not in study.key.read_text()
    per_pair = [sum(t["volume_pair"] == v for t in key["trials"]) for v in (0, 1)]
    assert sorted(per_pair) == [2, 3]
    assert all(t["generated_slice"] == t["real_slice"] for t in key["trials"])  # same depths here
    (tmp_path / "gen" / "case2.nii.gz").write_bytes((tmp_path / "gen" / "case0_synthetic.nii.gz").read_bytes())
    with pytest.raises(InputError, match="holds 3 volumes but .* holds 2"):
        rs.build_study(tmp_path / "real", tmp_path / "gen", tmp_path / "out2", pairs=5, seed=2, size_px=64)


def test_bad_input_names_the_input(reader_volumes, tmp_path):
    real, generated = reader_volumes
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "missing.nii.gz")) + ": no such file"):
        rs.build_study(tmp_path / "missing.nii.gz", generated, tmp_path / "o1", seed=1)
    with pytest.raises(InputError, match=re.escape(str(real)) + ": 30 slice pairs asked of a volume with 16"):
        rs.build_study(real, generated, tmp_path / "o2", pairs=30, seed=1)
    with pytest.raises(InputError, match="window must be lung, mediastinum or both"):
        rs.build_study(real, generated, tmp_path / "o3", window="bone")
    with pytest.raises(InputError, match="pairs must be at least 1"):
        rs.build_study(real, generated, tmp_path / "o4", pairs=0)
    study = build(reader_volumes, tmp_path / "o5", pairs=2)
    before = folder_files(tmp_path / "o5")
    with pytest.raises(InputError, match="already exists; not overwriting"):
        build(reader_volumes, tmp_path / "o5", pairs=2, seed=9)
    assert folder_files(tmp_path / "o5") == before and study.key.exists()
    assert not [p for p in (tmp_path / "o2").glob(".tmp-*")]
