"""Datasets with a paired condition (schema 2): simulated low dose, real pairs, and the lowdose pipeline."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from cgan_ct import InputError
from cgan_ct.config import LowDoseConfig, conversion_config
from cgan_ct.data import schema
from cgan_ct.data.conversion import convert
from cgan_ct.data.input_pipeline import make_dataset
from cgan_ct.data.manifest import Manifest
from tests.dicom_factory import random_hu, write_ct_series

SHAPE = (20, 24, 18)


def _smooth_hu(shape, seed):
    """Tissue-like values, int16 (random_hu's range, smoothed so blocks are not all air)."""
    return np.clip(random_hu(shape, seed) // 2, -900, 1500).astype(np.int16)


def _records(dataset_dir, split="train", with_condition=True):
    manifest = Manifest.load(dataset_dir)
    out = []
    for shard in manifest.splits[split].shards:
        for record in tf.data.TFRecordDataset(str(dataset_dir / shard.name)):
            out.append(schema.decode_block(record, manifest.stored_size, with_condition=with_condition))
    return out


@pytest.fixture()
def pairs(tmp_path):
    """Three patients with a full-dose series and a 'low-dose' one (the full dose + 100 HU) on the same grid."""
    full, low = tmp_path / "full", tmp_path / "low"
    for p in range(3):
        hu = _smooth_hu(SHAPE, p)
        write_ct_series(full / f"p{p}", hu, tags={"PatientID": f"P{p}"})
        write_ct_series(low / f"p{p}", hu + 100, tags={"PatientID": f"P{p}"})
    return full, low


def test_paired_conversion_stores_the_condition_voxel_for_voxel(pairs, tmp_path):
    full, low = pairs
    config = conversion_config("smoke", condition="paired", test_fraction=0.34)
    report = convert([full], tmp_path / "ds", config, workers=1, condition_inputs=[low])
    assert report.complete
    manifest = report.manifest
    assert manifest.schema_version == schema.SCHEMA_VERSION == 2
    assert manifest.condition == {"kind": "paired"}
    assert all(v.condition_volume_id and v.condition_volume_id != v.volume_id for v in manifest.volumes)
    records = _records(tmp_path / "ds")
    assert records
    for r in records:
        hu, condition = r["hu"].numpy().astype(int), r["condition_hu"].numpy().astype(int)
        inside = hu > -1024  # padding is air in both
        np.testing.assert_array_equal(condition[inside], hu[inside] + 100)

    # the lowdose pipeline augments block and condition alike: their difference stays exactly 100 HU
    dataset = make_dataset(tmp_path / "ds", "train", "lowdose", 4, seed=3)
    mapping = manifest.mapping
    for condition, target in dataset.take(3):
        difference = mapping.inverse(condition.numpy()) - mapping.inverse(target.numpy())
        tissue = mapping.inverse(target.numpy()) > -900
        np.testing.assert_allclose(difference[tissue], 100.0, atol=0.5)


def test_pairs_that_do_not_match_are_skipped_with_the_reason(tmp_path):
    full, low = tmp_path / "full", tmp_path / "low"
    for p in range(3):
        write_ct_series(full / f"p{p}", _smooth_hu(SHAPE, p), tags={"PatientID": f"P{p}"})
    write_ct_series(low / "p0", _smooth_hu(SHAPE, 0), tags={"PatientID": "P0"})  # matches
    write_ct_series(low / "p1", _smooth_hu(SHAPE, 1), pixel_spacing=(0.7, 0.7), tags={"PatientID": "P1"})
    # P2 has no low-dose series at all
    config = conversion_config("smoke", condition="paired", test_fraction=0.0)
    report = convert([full], tmp_path / "ds", config, workers=1, condition_inputs=[low])
    assert not report.complete
    reasons = [reason for _, reason in report.skipped]
    assert any("pixel spacing" in r for r in reasons), reasons
    assert any("no condition volume" in r for r in reasons), reasons
    assert report.manifest.counts["volumes"] == 1
    # every input named: a pseudonym in the manifest, the folder on the console
    assert all(s.source.startswith("vol-") for s in report.manifest.skipped)


def test_a_shorter_condition_series_crops_the_pair_to_their_common_slices(tmp_path):
    hu = _smooth_hu(SHAPE, 0)
    write_ct_series(tmp_path / "full", hu, tags={"PatientID": "P0"})
    origin = (-100.0, -120.0, 50.0 + 4 * 2.5)  # starts 4 slices later
    write_ct_series(tmp_path / "low", hu[4:16] + 100, origin=origin, tags={"PatientID": "P0"})
    config = conversion_config("smoke", condition="paired", test_fraction=0.0)
    report = convert([tmp_path / "full"], tmp_path / "ds", config, workers=1, condition_inputs=[tmp_path / "low"])
    (volume,) = report.manifest.volumes
    assert volume.shape_zyx[0] == 12
    assert any("kept slices 4..15 of 20" in w for w in volume.warnings)
    for r in _records(tmp_path / "ds"):
        hu_block, condition = r["hu"].numpy().astype(int), r["condition_hu"].numpy().astype(int)
        inside = hu_block > -1024
        np.testing.assert_array_equal(condition[inside], hu_block[inside] + 100)


def test_simulated_lowdose_conversion_is_reproducible(tmp_path):
    hu = _smooth_hu((16, 40, 40), 0)
    write_ct_series(tmp_path / "in", hu, tags={"PatientID": "P0"})
    config = conversion_config("smoke", condition="lowdose", lowdose=LowDoseConfig(views=64), test_fraction=0.0)
    first = convert([tmp_path / "in"], tmp_path / "a", config, workers=1)
    second = convert([tmp_path / "in"], tmp_path / "b", config, workers=1)
    assert first.manifest.condition["kind"] == "lowdose" and first.manifest.condition["dose"] == 0.25
    for a, b in zip(first.manifest.splits["train"].shards, second.manifest.splits["train"].shards, strict=True):
        assert (tmp_path / "a" / a.name).read_bytes() == (tmp_path / "b" / b.name).read_bytes()
    noise = [r["condition_hu"].numpy().astype(float) - r["hu"].numpy() for r in _records(tmp_path / "a")]
    noise = np.concatenate([n.ravel() for n in noise])
    assert 1.0 < noise.std() < 400.0 and abs(noise.mean()) < 20.0
    other = conversion_config(
        "smoke", condition="lowdose", lowdose=LowDoseConfig(views=64, dose=0.5), test_fraction=0.0
    )
    with pytest.raises(InputError, match="different conversion"):
        convert([tmp_path / "in"], tmp_path / "a", other, workers=1)  # the dose is part of the conversion


def test_lowdose_needs_a_stored_condition_and_schema_1_still_reads(tmp_path):
    write_ct_series(tmp_path / "in", _smooth_hu(SHAPE, 0), tags={"PatientID": "P0"})
    report = convert([tmp_path / "in"], tmp_path / "ds", conversion_config("smoke", test_fraction=0.0), workers=1)
    assert report.manifest.condition is None
    with pytest.raises(InputError, match="no paired condition"):
        make_dataset(tmp_path / "ds", "train", "lowdose", 2)
    # a dataset written before schema 2: version 1, no condition key
    path = tmp_path / "ds" / "manifest.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    del data["condition"]
    path.write_text(json.dumps(data))
    condition, target = next(iter(make_dataset(tmp_path / "ds", "train", "denoise", 2)))
    assert condition.shape == target.shape == (2, 16, 16, 16, 1)
    with pytest.raises(ValueError, match="condition inputs"):
        convert([tmp_path / "in"], tmp_path / "x", conversion_config("smoke", condition="paired"), workers=1)


def test_lowdose_trains_exports_with_its_dose_and_serves(tmp_path):
    """The lowdose task end to end: dataset -> train -> export (records the dose) -> infer -> no-reference report."""
    from cgan_ct.config import model_config
    from cgan_ct.inference.evaluation import evaluate_no_reference
    from cgan_ct.inference.inference import BlockModel, condition_volume, infer_volume
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.model.export import ModelInfo, export_generator
    from cgan_ct.model.training import RunOptions, train

    hu = _smooth_hu((16, 40, 40), 0)
    write_ct_series(tmp_path / "in", hu, tags={"PatientID": "P0"})
    lowdose = LowDoseConfig(views=64, dose=0.5)
    config = conversion_config("smoke", condition="lowdose", lowdose=lowdose, test_fraction=0.0)
    convert([tmp_path / "in"], tmp_path / "ds", config, workers=1)
    result = train(
        tmp_path / "ds", tmp_path / "run", model_config("smoke"), RunOptions("lowdose", steps_per_epoch=3), verbose=0
    )
    assert not result.diverged
    model_dir = export_generator(tmp_path / "run", tmp_path / "model")
    info = ModelInfo.load(model_dir)
    assert info.task == "lowdose" and info.lowdose == lowdose and info.stored_condition == "lowdose"
    model = BlockModel(model_dir)
    volume = read_volume(tmp_path / "in")
    condition, generated = infer_volume(volume, model, overlap=0.0)
    expected = condition_volume(volume, "lowdose", 0, lowdose=lowdose)
    np.testing.assert_array_equal(condition.hu, expected.hu)  # the model's own dose, simulated
    assert generated.hu.shape == volume.hu.shape
    rows = evaluate_no_reference([tmp_path / "in"], {"lowdose": model}, tmp_path / "report", overlap=0.0)
    assert {r["measure"] for r in rows} >= {"noise_tissue_hu", "edge_body_mm"}
    assert (tmp_path / "report" / "no_reference.md").read_text().count("| lowdose |") == len(rows)
    # a model trained on real pairs has no dose to simulate: it takes real scans as they are
    paired = dataclasses.replace(info, condition={**info.condition, "stored": {"kind": "paired"}})
    assert paired.lowdose is None and paired.stored_condition == "paired"
    with pytest.raises(InputError, match="as it is"):
        condition_volume(volume, "lowdose", 0, lowdose=paired.lowdose)
