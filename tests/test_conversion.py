"""cgan-ct-convert on synthetic series: blocks, split, manifest, resume, determinism, bad inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tensorflow as tf

from cgan_ct import InputError, read_volume
from cgan_ct.config import ConversionConfig, conversion_config
from cgan_ct.data import schema
from cgan_ct.data.conversion import convert, split_patients
from cgan_ct.data.dataset_check import verify
from tests.dicom_factory import random_hu, write_ct_series
from tests.volume_factory import write_nifti_volume

SMOKE = conversion_config("smoke")  # 16^3 blocks, margin 4


def _decoded_blocks(dataset_dir, manifest):
    out = {}
    for split in ("train", "test"):
        for shard in manifest["splits"][split]["shards"]:
            data = tf.data.TFRecordDataset(str(dataset_dir / shard["name"]))
            for record in data.map(lambda r: schema.decode_block(r, manifest["stored_size"])):
                key = (record["volume_id"].numpy().decode(), tuple(record["origin_zyx"].numpy().tolist()))
                assert key not in out
                out[key] = (split, record["hu"].numpy(), int(record["padding_voxels"]))
    return out


def test_converts_every_block_exactly_and_splits_by_patient(archive, tmp_path):
    report = convert([archive, tmp_path / "missing"], tmp_path / "ds", SMOKE, salt="s", workers=1)
    m = report.manifest.to_json()
    assert not report.complete
    reasons = sorted(s["reason"] for s in m["skipped"])
    assert reasons == ["modality is 'MR', not CT", "no such file or folder"]
    assert m["counts"]["volumes"] == 6 and len(m["volumes"]) == 6
    assert m["splits"]["test"]["patients"] == 1 and m["splits"]["train"]["patients"] == 4  # round(0.2 * 5)
    by_patient = {}
    for v in m["volumes"]:
        by_patient.setdefault(v["patient_key"], set()).add(v["split"])
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert max(len([v for v in m["volumes"] if v["patient_key"] == k]) for k in by_patient) == 2  # P1's two

    blocks = _decoded_blocks(tmp_path / "ds", m)
    assert len(blocks) == m["counts"]["blocks"] == sum(v["blocks"] for v in m["volumes"])
    source = read_volume(archive / "p2" / "a", salt="s")
    padded = np.pad(source.hu, [(4, 4 + 32 - 20), (4, 4 + 32 - 24), (4, 4 + 32 - 18)], constant_values=-1024)
    mine = {k: v for k, v in blocks.items() if k[0] == source.volume_id}
    assert len(mine) == 2 * 2 * 2
    for (_, (z, y, x)), (_, hu, _padding) in mine.items():
        np.testing.assert_array_equal(hu, padded[z : z + 24, y : y + 24, x : x + 24])
    assert sum(p for _, _, p in mine.values()) == 32 * 32 * 32 - 20 * 24 * 18
    assert verify(tmp_path / "ds") == []
    assert m["intensity"]["kind"] == "linear"  # the default since issue 16 (measured better in HU)
    equalized = convert([archive], tmp_path / "ds-eq", dataclasses.replace(SMOKE, intensity="equalize"), workers=1)
    intensity = equalized.manifest.to_json()["intensity"]
    assert intensity["kind"] == "equalize" and len(intensity["levels"]) == 4096


def test_same_inputs_give_identical_shards(archive, tmp_path):
    a = convert([archive], tmp_path / "a", SMOKE, salt="s", workers=1).manifest.to_json()
    b = convert([archive], tmp_path / "b", SMOKE, salt="s", workers=2).manifest.to_json()
    shards = lambda m: [(s["name"], s["crc32c"]) for sp in ("train", "test") for s in m["splits"][sp]["shards"]]  # noqa: E731
    assert shards(a) == shards(b) and len(shards(a)) >= 2
    assert a["intensity"] == b["intensity"]


def test_rerun_reuses_and_overwrite_redoes(archive, tmp_path):
    first = convert([archive], tmp_path / "ds", SMOKE, salt="s", workers=1)
    again = convert([archive], tmp_path / "ds", SMOKE, salt="s", workers=1)
    assert again.shards_written == 0 and again.manifest == first.manifest
    with pytest.raises(InputError, match="holds a different conversion"):
        convert([archive], tmp_path / "ds", SMOKE.__class__(block_size=16, margin=2, unet_depth=2), salt="s")
    redo = convert([archive], tmp_path / "ds", SMOKE, salt="s", workers=1, overwrite=True)
    assert redo.shards_written == first.shards_written + first.shards_reused


def test_interrupted_run_is_completed_without_redoing_done_shards(archive, tmp_path):
    class SimulatedCrashError(Exception):
        pass

    def stop_after_first(receipt, done, total):
        raise SimulatedCrashError  # as if the process died right after the first shard

    with pytest.raises(SimulatedCrashError):
        convert([archive], tmp_path / "ds", SMOKE, salt="s", workers=1, progress=stop_after_first)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    (tmp_path / "ds" / ".tmp-train-00001-of-00002.tfrecord.12345").write_bytes(b"half a shard")
    again = convert([archive], tmp_path / "ds", SMOKE, salt="s", workers=1)
    assert again.shards_reused == 1 and again.shards_written >= 1
    assert not list((tmp_path / "ds").glob(".tmp-*")) and not (tmp_path / "ds" / ".work").exists()
    assert again.manifest.splits == convert([archive], tmp_path / "fresh", SMOKE, salt="s").manifest.splits
    assert verify(tmp_path / "ds") == []


def test_split_is_deterministic_and_by_fraction():
    keys = [f"pat-{i}" for i in range(10)]
    a = split_patients(keys, 0.2, seed=3)
    assert a == split_patients(list(reversed(keys)), 0.2, seed=3)
    assert sorted(a.values()).count("test") == 2
    assert a != split_patients(keys, 0.2, seed=4)
    assert set(split_patients(["one"], 0.2, 0).values()) == {"train"}
    assert sorted(split_patients(["a", "b"], 0.2, 0).values()) == ["test", "train"]


def test_short_volume_is_padded_not_dropped(tmp_path):
    write_nifti_volume(tmp_path / "short.nii", (5, 20, 20), seed=1)
    m = convert([tmp_path / "short.nii"], tmp_path / "ds", SMOKE, workers=1).manifest.to_json()
    [volume] = m["volumes"]
    assert volume["shape_zyx"] == [5, 20, 20] and volume["blocks"] == 4
    assert volume["padding_voxels"] == 4 * 16**3 - 5 * 20 * 20


def test_body_filter_drops_air_blocks(tmp_path):
    hu = np.full((32, 48, 48), -1024, np.int16)
    hu[:, 8:24, 8:24] = 40  # a small "body" in one corner
    image = sitk.GetImageFromArray(hu)
    sitk.WriteImage(image, str(tmp_path / "v.nii"))
    config = SMOKE.__class__(**{**SMOKE.__dict__, "drop_outside_body": True})
    m = convert([tmp_path / "v.nii"], tmp_path / "ds", config, workers=1).manifest.to_json()
    assert m["counts"]["blocks"] == 2 * 2 * 2 and m["counts"]["dropped_outside_body"] == 2 * 3 * 3 - 8


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of 2\\*\\*unet_depth"):
        ConversionConfig(block_size=24)
    with pytest.raises(ValueError, match="test_fraction"):
        ConversionConfig(test_fraction=1.0)


@pytest.mark.parametrize("kind", ["linear", "equalize"])
def test_nothing_converted_is_an_error(tmp_path, kind):
    missing = tmp_path / "missing"
    with pytest.raises(InputError, match=f"no volume to convert; nothing written. Skipped: {missing}: no such file"):
        convert([missing], tmp_path / "ds", dataclasses.replace(SMOKE, intensity=kind), workers=1)
    assert not (tmp_path / "ds").exists()


def test_manifest_is_json_with_checksums(archive, tmp_path):
    convert([archive], tmp_path / "ds", SMOKE, salt="s", workers=1)
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    for shard in m["splits"]["train"]["shards"]:
        assert len(shard["crc32c"]) == 8 and shard["records"] > 0
    assert m["schema_version"] == schema.SCHEMA_VERSION and m["block_size"] == 16 and m["margin"] == 4


@pytest.mark.slow
def test_real_chest_series(shared_ct, tmp_path):
    chest = shared_ct / "lung-pet-ct-dx-A0001"
    report = convert([chest], tmp_path / "ds", ConversionConfig(), workers=1)
    m = report.manifest.to_json()
    assert report.complete and m["counts"]["blocks"] == 2 * 16 * 16 and m["stored_size"] == 48
    [volume] = m["volumes"]
    assert volume["shape_zyx"] == [64, 512, 512] and volume["padding_voxels"] == 0
    hu = read_volume(chest).hu
    padded = np.pad(hu, 8, constant_values=-1024)
    blocks = _decoded_blocks(tmp_path / "ds", m)
    for (_, (z, y, x)), (_, block, _) in list(blocks.items())[::37]:
        np.testing.assert_array_equal(block, padded[z : z + 48, y : y + 48, x : x + 48])
    assert verify(tmp_path / "ds") == []


def test_series_without_a_series_uid_get_distinct_ids_that_reading_agrees_with(tmp_path):
    """Two series without SeriesInstanceUID: two volumes, each with the id reading it gives (was one id for both)."""
    root = tmp_path / "archive"
    for name, seed in (("a", 1), ("b", 2)):
        for path in write_ct_series(root / name, random_hu((20, 24, 18), seed=seed), tags={"PatientID": f"P{seed}"}):
            ds = pydicom.dcmread(path)
            del ds.SeriesInstanceUID
            ds.save_as(path, enforce_file_format=True)
    m = convert([root], tmp_path / "ds", SMOKE, workers=1).manifest.to_json()
    ids = sorted(v["volume_id"] for v in m["volumes"])
    assert len(ids) == 2 and ids[0] != ids[1]
    assert sorted(read_volume(root / name).volume_id for name in ("a", "b")) == ids
    assert verify(tmp_path / "ds") == []  # no duplicate blocks
