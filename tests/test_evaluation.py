"""Baselines, seam score, and cgan-ct-evaluate end to end on the real chest series."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import numpy as np
import pytest

from cgan_ct.inference.baselines import baselines, interpolate_samples, seam_score
from tests.conftest import REPO


def test_trilinear_from_samples_is_exact_on_a_ramp():
    z, y, x = np.meshgrid(np.arange(20), np.arange(24), np.arange(26), indexing="ij")
    ramp = (3 * z + 2 * y - x).astype(np.float32)
    condition = ramp.copy()
    condition[1::2] = 0  # only the kept samples may matter
    condition[:, 1::2] = 0
    condition[:, :, 1::2] = 0
    np.testing.assert_allclose(interpolate_samples(condition, 2, 1)[:-1, :-1, :-1], ramp[:-1, :-1, :-1], atol=1e-4)
    smooth = np.sin(z / 4.0) + np.cos(y / 5.0) + np.sin(x / 6.0)
    cubic = interpolate_samples(smooth.astype(np.float32), 2, 3)
    assert np.abs(cubic - smooth)[3:-3, 3:-3, 3:-3].max() < 0.02


def test_trilinear_from_cube_means_is_exact_on_a_ramp():
    """A mean-pyramid condition's samples sit at their cubes' centres: a ramp's cube means, interpolated from
    there, give the ramp back (the corner placement would shift it by half a voxel)."""
    from cgan_ct.ops.corruption import depixelate

    z, y, x = np.meshgrid(np.arange(20), np.arange(24), np.arange(26), indexing="ij")
    ramp = (3 * z + 2 * y - x).astype(np.float32)
    condition = depixelate(ramp, 2, pyramid="mean").numpy()
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(interpolate_samples(condition, 2, 1, "mean")[inner], ramp[inner], atol=1e-3)
    assert np.abs(interpolate_samples(condition, 2, 1)[inner] - ramp[inner]).min() > 1  # placed at the corners


def test_tile_edges_are_where_the_stitched_tiles_begin_or_end():
    from cgan_ct.ops.blocks import tile_edges

    assert tile_edges(70, 32, 0.0) == [32, 38, 64]  # tiles 0, 32, 38 (the last flush with the end)
    assert tile_edges(70, 32, 0.25) == [24, 32, 38, 56]  # tiles 0, 24, 38: stride 24
    assert tile_edges(64, 32, 0.0) == [32] and tile_edges(20, 32, 0.25) == []  # a short axis: one padded tile


def _seam_phantom():
    from cgan_ct.demo.phantom import make_phantom

    return make_phantom(1, 40, 70).hu.astype(np.float32)  # 40 x 70 x 70: not multiples of the block


def test_seam_score_is_exactly_one_for_an_identity_and_for_any_seamless_stitching():
    from cgan_ct.ops.blocks import predict_volume

    original = _seam_phantom()
    for overlap in (0.25, 0.0):
        assert seam_score(original, original, 16, overlap) == 1.0
        stitched = predict_volume(original, lambda blocks: blocks, 16, overlap)  # an identity model, tiled
        assert seam_score(stitched, original, 16, overlap) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = original + rng.normal(0, 20, original.shape).astype(np.float32)  # no tiles anywhere
    assert seam_score(noisy, original, 16, 0.25) == pytest.approx(1.0, abs=0.1)


def test_seam_score_sees_steps_at_the_real_tile_edges_only():
    from cgan_ct.ops.blocks import predict_volume, tile_edges

    original = _seam_phantom()
    for overlap in (0.25, 0.0):
        stepped = original.copy()
        for axis in range(3):  # +-40 HU, switching at every tile edge
            n = original.shape[axis]
            sign = (-1.0) ** np.searchsorted(tile_edges(n, 16, overlap), np.arange(n), side="right")
            stepped += np.expand_dims(40 * sign, [a for a in range(3) if a != axis])
        assert seam_score(stepped, original, 16, overlap) > 1.5, overlap
        offsets = iter(np.random.default_rng(1).normal(0, 100, 10_000))

        def per_tile_offset(blocks, offsets=offsets):  # a model off by a different constant on every tile
            return blocks + np.array([next(offsets) for _ in blocks], np.float32)[:, None, None, None, None]

        unblended = predict_volume(original, per_tile_offset, 16, overlap, window="none")
        assert seam_score(unblended, original, 16, overlap) > 1.25, overlap  # the phantom's texture: 52 HU
    off_edge = original.copy()
    off_edge[:, :, 44:] += 80  # a step between tile edges (x edges 12, 16, 24, 28, 36, 40, 48, 52, 54, 64)
    assert seam_score(off_edge, original, 16, 0.25) == 1.0


def test_seam_score_is_undefined_not_huge_where_a_volume_is_constant_beside_the_tile_edges():
    from cgan_ct.inference import report

    original = _seam_phantom()
    cells = np.repeat(np.repeat(np.repeat(original[::2, ::2, ::2], 2, 0), 2, 1), 2, 2)  # a pixelated condition
    assert math.isnan(seam_score(cells, original, 16, 0.25, grid=2))  # no step beside a grid plane: 0 / 0
    assert math.isnan(seam_score(original, np.full_like(original, -1000.0), 16, 0.25))  # a reference of air
    assert seam_score(original + 0.3 * (cells - original), original, 16, 0.25, grid=2) < 10  # texture left: a score
    row = {"patient": "p", "volume": "v", "task": "depixelate", "method": "condition", "region": "volume",
           "psnr_slices_db": 30.0, "ssim_slices": 0.9, "mae_hu": 20.0, "psnr_volume_db": 30.0,
           "seam_score": seam_score(cells, original, 16, 0.25, grid=2), "z_std_hu": float("nan")}  # fmt: skip
    assert report.markdown_table([row], "volume").splitlines()[-1] == (
        "| depixelate | condition | 1 | 1 | 30.00 | 0.9000 | 20.0 | - |"
    )


def test_baselines_per_task():
    volume = np.random.default_rng(2).normal(0, 100, (8, 32, 32)).astype(np.float32)
    assert set(baselines("denoise", volume)) == {"condition", "gaussian", "non_local_means"}
    assert set(baselines("depixelate", volume)) == {"condition", "trilinear", "tricubic"}
    assert set(baselines("autoencode", volume)) == {"condition"}
    assert set(baselines("lowdose", volume, skip=())) == {"condition", "gaussian", "non_local_means", "bm3d"}


def test_denoisers_improve_a_noisy_smooth_volume_and_tuning_picks_from_training_pairs():
    from cgan_ct.inference.baselines import tune_baselines
    from cgan_ct.inference.metrics import psnr_db

    rng = np.random.default_rng(3)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in (4, 48, 48)), indexing="ij")
    clean = (300 * np.cos(3 * xx) * np.sin(2 * yy) + 40 * zz).astype(np.float32)
    noisy = clean + rng.normal(0, 60, clean.shape).astype(np.float32)
    out = baselines("lowdose", noisy, skip=())
    for method in ("gaussian", "non_local_means", "bm3d"):
        assert psnr_db(clean, out[method]) > psnr_db(clean, noisy) + 3, method
    tuned = tune_baselines("lowdose", [(noisy, clean)], methods=("gaussian",))
    assert tuned["gaussian"]["sigma_px"] in (0.35, 0.5, 0.7, 1.0, 1.4, 2.0)
    assert tuned["gaussian"]["psnr_db"] >= psnr_db(clean, out["gaussian"]) - 1e-3  # the default is on the grid


@pytest.mark.slow
def test_evaluate_end_to_end_on_the_chest(model_dir, shared_ct, tmp_path):
    """The central 16 slices of a real chest (one block in z of the smoke model; the series' DICOM reading is
    the same read_volume that cgan-ct-infer's test takes through a whole series)."""
    from cgan_ct import read_volume
    from cgan_ct.io.image_files import write_nifti

    volume = read_volume(shared_ct / "lung-pet-ct-dx-A0001")
    middle = len(volume.hu) // 2
    write_nifti(volume.replace(hu=volume.hu[middle - 8 : middle + 8].copy()), tmp_path / "chest.nii.gz")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.evaluate",
            "--model",
            f"denoise={model_dir}",
            "--input",
            str(tmp_path / "chest.nii.gz"),
            "--output_dir",
            str(tmp_path / "report"),
            "--overlap",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {(r["method"], r["region"]) for r in rows}
    assert {("model", "volume"), ("model", "lungs"), ("condition", "volume"), ("non_local_means", "lungs")} <= methods
    for row in rows:
        assert 0 < float(row["psnr_slices_db"]) <= 100 and -1 <= float(row["ssim_slices"]) <= 1
        assert math.isfinite(float(row["mae_hu"]))
    model_row = next(r for r in rows if r["method"] == "model" and r["region"] == "volume")
    assert float(model_row["z_std_hu"]) >= 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Lungs (Table II)" in text and "| denoise | model | 1 |" in text
    assert "Noise input Z (denoise): per-voxel spread over two draws" in text
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert figures == ["denoise_000_closeup.png", "denoise_000_scan.png"]


def test_a_difference_under_a_tenth_of_a_db_is_a_tie_in_every_summary(tmp_path):
    from cgan_ct.inference import report

    assert report.verdict(37.08, 37.06) == "ties with" and report.verdict(33.48, 33.48) == "ties with"
    assert report.verdict(35.61, 33.48) == "beats" and report.verdict(35.61, 38.02) == "loses to"
    rows = [
        {"task": "denoise", "method": m, "region": "volume", "psnr_slices_db": v, "patient": "p", "volume": "v"}
        for m, v in (("model", 37.08), ("condition", 37.06), ("gaussian", 36.0), ("non_local_means", 38.0))
    ]
    c = report.comparison(rows)["denoise"]
    assert c["vs_condition"] == "ties with" and c["vs_best_baseline"] == "loses to"
    assert c["best_baseline"] == "non_local_means"
    line = report.verdict_lines(rows)[0]
    assert "ties with its condition" in line and "beats" not in line


def test_report_counts_patients_and_averages_each_patients_volumes_first(tmp_path):
    from cgan_ct.inference import report

    def row(patient, volume, method, psnr):
        return {"patient": patient, "volume": volume, "task": "denoise", "method": method, "region": "volume",
                "psnr_slices_db": psnr, "ssim_slices": psnr / 100, "mae_hu": 100 - psnr, "psnr_volume_db": psnr,
                "seam_score": 1.0, "z_std_hu": float("nan")}  # fmt: skip

    rows = []
    for patient, volume, model_db, condition_db in (("pat-a", "vol-1", 30, 33), ("pat-a", "vol-2", 32, 33),
                                                    ("pat-b", "vol-3", 40, 34)):  # fmt: skip
        rows += [row(patient, volume, "model", model_db), row(patient, volume, "condition", condition_db)]
    table = report.markdown_table(rows, "volume").splitlines()
    assert table[0] == "| task | method | patients | volumes | PSNR (dB) | SSIM | MAE (HU) | seam score |"
    assert "| denoise | model | 2 | 3 | 35.50 | 0.3550 | 64.5 | 1.000 |" in table  # (31 + 40) / 2, not 34
    c = report.comparison(rows)["denoise"]
    assert c["model_db"] == 35.5 and c["condition_db"] == 33.5 and c["vs_condition"] == "beats"
    report.write_report(rows, tmp_path)
    assert "each patient's volumes averaged first" in (tmp_path / "report.md").read_text()


class _FakeModel:
    """A block model whose output is its input plus ``scale`` times seed-dependent noise."""

    block_size = 16
    tile_grid = 1

    def __init__(self, scale: float):
        self.scale = scale

    def predictor(self, seed: int):
        rng = np.random.default_rng(seed)
        return lambda blocks: blocks + self.scale * rng.standard_normal(blocks.shape).astype(np.float32)


def test_noise_spread_is_zero_for_a_deterministic_model_and_the_noise_for_a_noisy_one():
    from cgan_ct.inference.evaluation import noise_spread_hu, noise_spread_lines

    hu = np.full((40, 48, 48), -1000, np.int16)
    hu[:, 8:40, 8:40] = 40
    for scale, expected in ((0.0, 0.0), (10.0, 10.0)):
        model = _FakeModel(scale)
        first = model.predictor(0)(hu[None, ..., None].astype(np.float32))[0, ..., 0]
        first = np.asarray(np.rint(first))
        spread = noise_spread_hu(hu, model, overlap=0.0, seed=0, first=first)
        assert spread == pytest.approx(expected, abs=0.8)  # the Gaussian blend of tiles shrinks it a little
    rows = [{"task": "denoise", "method": "model", "region": "volume", "z_std_hu": 0.2}]
    assert "ignores its noise input" in noise_spread_lines(rows)[0]
    rows[0]["z_std_hu"] = 12.0
    assert "changes the output" in noise_spread_lines(rows)[0]
