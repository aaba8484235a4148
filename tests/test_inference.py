"""Whole-scan inference through an exported model, and the progress bar."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cgan_ct import read_volume
from cgan_ct.cli.progress import ProgressBar
from cgan_ct.errors import InputError
from cgan_ct.inference.inference import BlockModel, condition_volume, infer_volume
from tests.conftest import REPO
from tests.volume_factory import phantom_hu


@pytest.fixture()
def awkward_volume(tmp_path):
    path = tmp_path / "awkward.nii.gz"
    image = sitk.GetImageFromArray(phantom_hu(7)[:20, :40, :37].copy())
    image.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(image, str(path))
    return read_volume(path)


def test_infer_keeps_the_grid_and_uses_the_training_condition(model_dir, awkward_volume):
    model = BlockModel(model_dir)
    condition, generated = infer_volume(awkward_volume, model, overlap=0.25, batch_size=5)
    for out in (condition, generated):
        assert out.shape == awkward_volume.shape and out.hu.dtype == np.int16
        assert out.spacing_mm == awkward_volume.spacing_mm and out.origin_mm == awkward_volume.origin_mm
    np.testing.assert_array_equal(condition.hu, condition_volume(awkward_volume, "denoise", 0).hu)
    assert not np.array_equal(condition.hu, awkward_volume.hu)
    again = infer_volume(awkward_volume, model, overlap=0.25, batch_size=5)[1]
    np.testing.assert_array_equal(again.hu, generated.hu)  # seeded: reproducible
    as_is, _ = infer_volume(awkward_volume, model, condition_mode="as_is")
    np.testing.assert_array_equal(as_is.hu, awkward_volume.hu)


def test_infer_rejects_wrong_task_and_non_models(model_dir, awkward_volume, tmp_path):
    with pytest.raises(InputError, match="trained for 'denoise'"):
        infer_volume(awkward_volume, BlockModel(model_dir), task="depixelate")
    with pytest.raises(InputError, match="neither a model exported"):
        BlockModel(tmp_path)


def test_a_run_folder_gives_the_same_output_as_its_export(model_dir, smoke_run, awkward_volume):
    _, exported = infer_volume(awkward_volume, BlockModel(model_dir))
    _, direct = infer_volume(awkward_volume, BlockModel(smoke_run))
    assert np.abs(exported.hu.astype(int) - direct.hu).max() <= 1


@pytest.mark.slow
def test_cli_on_the_real_chest_series(model_dir, shared_ct, tmp_path):
    chest = shared_ct / "lung-pet-ct-dx-A0001"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.infer",
            "--model",
            str(model_dir),
            "--input",
            str(chest),
            "--output_dir",
            str(tmp_path / "out"),
            "--overlap",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    source = read_volume(chest)
    for name in ("generated.nii.gz", "generated_dicom", "condition.nii.gz", "condition_dicom"):
        out = read_volume(tmp_path / "out" / name)
        assert out.shape == source.shape
        np.testing.assert_allclose(out.origin_mm, source.origin_mm, atol=1e-3)
    assert result.stderr.count("blocks [") <= 12  # the bar logs tenths, not every batch


def test_progress_bar_throttles_outside_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(100, "x", stream=stream)
    for i in range(1, 101):
        bar.update(i)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("x [" + "#" * 30 + "] 100/100")


# --- serving input checks (issue 18, item 17) ---------------------------------------------------------------

BAD_SHAPE = r"blocks_hu must be float32 \[batch, 16, 16, 16, 1\] for this model \(block size 16\); got shape\] \["


def test_serving_signatures_reject_bad_blocks_with_one_clear_message(model_dir):
    import tensorflow as tf

    signatures = tf.saved_model.load(str(model_dir)).signatures
    seed = tf.constant([1, 2], tf.int64)
    calls = {
        "serving_default": lambda x: signatures["serving_default"](blocks_hu=x),
        "generate_hu_seeded": lambda x: signatures["generate_hu_seeded"](blocks_hu=x, seed=seed),
        "generate_normalized": lambda x: signatures["generate_normalized"](condition=x, noise=tf.zeros_like(x)),
    }
    good = np.zeros((2, 16, 16, 16, 1), np.float32)
    for name, call in calls.items():
        assert call(tf.constant(good))  # fine blocks pass
        for value in (np.nan, np.inf, -np.inf):
            bad = good.copy()
            bad[1, 3, 4, 5, 0] = value  # one voxel of one block
            with pytest.raises(tf.errors.InvalidArgumentError, match="holds NaN or Inf"):
                call(tf.constant(bad))
        for shape in ((2, 8, 16, 16, 1), (2, 16, 16, 16), (1, 16, 16, 16, 2)):
            message = BAD_SHAPE.replace("blocks_hu", "condition") if name == "generate_normalized" else BAD_SHAPE
            message += re.escape(" ".join(map(str, shape)) + "]")
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                call(tf.zeros(shape))
        with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor but is a int32"):
            call(tf.zeros((2, 16, 16, 16, 1), tf.int32))


def test_serving_clamps_out_of_range_hu_to_the_mapping_range_as_documented(model_dir):
    import tensorflow as tf

    from cgan_ct.constants import CLIP_HU
    from cgan_ct.model import export

    seeded = tf.saved_model.load(str(model_dir)).signatures["generate_hu_seeded"]
    seed = tf.constant([3, 4], tf.int64)

    def run(hu):
        return seeded(blocks_hu=tf.fill([1, 16, 16, 16, 1], float(hu)), seed=seed)["blocks_hu"].numpy()

    np.testing.assert_array_equal(run(1e6), run(CLIP_HU[1]))
    np.testing.assert_array_equal(run(-1e6), run(CLIP_HU[0]))
    assert "clamped to [-1024, 3071] HU" in export.__doc__
    assert "outside [-1024, 3071] are clamped" in (REPO / "docs" / "serving.md").read_text()


def test_python_side_checks_blocks_before_calling_the_model(model_dir, monkeypatch):
    model = BlockModel(model_dir)

    def must_not_run(**kwargs):
        raise AssertionError("the SavedModel was called")

    monkeypatch.setattr(model, "_signature", must_not_run)
    predict = model.predictor(0)
    blocks = np.zeros((3, 16, 16, 16, 1), np.float32)
    blocks[2, 0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"blocks_hu holds 1 NaN or Inf value\(s\)"):
        predict(blocks)
    with pytest.raises(InputError, match=r"blocks_hu must be \[batch, 16, 16, 16, 1\].*got \(3, 8, 16, 16, 1\)"):
        predict(np.zeros((3, 8, 16, 16, 1), np.float32))
    with pytest.raises(InputError, match="blocks_hu must be real numbers, got complex64"):
        predict(np.zeros((3, 16, 16, 16, 1), np.complex64))


# --- serving layout: integer version folders (issue 18, item 20) --------------------------------------------


def test_export_writes_version_folders_and_loading_takes_the_highest(model_dir, smoke_run, awkward_volume, tmp_path):
    from cgan_ct.model.export import export_version

    base = tmp_path / "models" / "denoise"
    assert export_version(smoke_run, base) == (base / "1", 1)  # the next free integer
    assert export_version(smoke_run, base) == (base / "2", 2)
    assert export_version(smoke_run, base, version=7) == (base / "7", 7)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7"]  # nothing else for TF Serving to skip
    with pytest.raises(InputError, match="not overwriting"):
        export_version(smoke_run, base, version=2)
    assert export_version(smoke_run, base, version=2, overwrite=True) == (base / "2", 2)
    with pytest.raises(InputError, match="version must be a positive integer"):
        export_version(smoke_run, base, version=0)
    with pytest.raises(InputError, match="is itself a SavedModel"):
        export_version(smoke_run, model_dir)  # a flat export: a version inside it would be shadowed

    latest = BlockModel(base)
    assert (latest.model_dir, latest.version) == (base / "7", 7)
    direct = BlockModel(base / "2")  # a SavedModel folder itself, as before
    assert (direct.model_dir, direct.version) == (base / "2", None)
    flat = BlockModel(model_dir)
    assert (flat.model_dir, flat.version) == (model_dir, None)
    outputs = [infer_volume(awkward_volume, m, batch_size=8)[1].hu for m in (latest, direct, flat)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])
    (base / "12").mkdir()  # the highest version, but not a complete export: TF Serving would try it too
    with pytest.raises(InputError, match=r"denoise/12: the highest version folder is not a model exported"):
        BlockModel(base)


def test_export_cli_writes_the_next_version_or_the_one_asked(smoke_run, tmp_path):
    # each export runs in a fresh process: the training process had the custom layers registered, a job that
    # only exports did not (a bug until issue 16)
    def export(*args):
        return subprocess.run(
            [sys.executable, "-m", "pipelines.export", "--run_dir", str(smoke_run), "--output_dir", str(tmp_path / "m"),
             *args], capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip

    first = export()
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"SavedModel version 1 written to {tmp_path / 'm' / '1'}" in first.stdout
    assert (tmp_path / "m" / "1" / "saved_model.pb").exists() and not (tmp_path / "m" / "saved_model.pb").exists()
    third = export("--version", "3")
    assert third.returncode == 0, third.stderr[-2000:]
    assert (tmp_path / "m" / "3" / "cgan_ct_model.json").exists()
    again = export("--version", "3")
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_a_depixelation_model_sees_its_cells_from_each_tiles_first_voxel(awkward_volume, monkeypatch):
    """x has 37 voxels: the last 32-voxel tile started at x = 5 and saw cells shifted by one."""
    model = BlockModel("pretrained:depixelate")
    factor = model.info.factor
    assert model.tile_grid == factor == 2
    seen = []

    def check_cells(seed):
        def predict(blocks_hu):
            for tile in blocks_hu[..., 0]:
                cells = tile[::factor, ::factor, ::factor]
                seen.append(np.array_equal(tile, cells.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)))
            return blocks_hu

        return predict

    monkeypatch.setattr(model, "predictor", check_cells)
    condition, generated = infer_volume(awkward_volume, model, overlap=0.25, batch_size=8)
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} tiles saw shifted cells"
    np.testing.assert_array_equal(generated.hu, condition.hu)  # identity predictor: stitched back exactly


def test_a_dose_is_refused_for_a_model_it_does_not_apply_to(model_dir, awkward_volume):
    with pytest.raises(InputError, match="a dose applies to lowdose models .* not to a denoise model"):
        infer_volume(awkward_volume, BlockModel(model_dir), dose=0.5)
