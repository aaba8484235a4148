"""The manifest of a converted dataset: what it holds and how to read it back.

Written last, atomically: a dataset folder with a manifest is complete.
"""

from __future__ import annotations

import json
import pathlib

from cgan_ct.config import ConversionConfig
from cgan_ct.data import schema
from cgan_ct.errors import VolumeError
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.version import __version__
from cgan_ct.ops import intensity

MANIFEST = "manifest.json"
SPLITS = ("train", "test")


def fit_intensity(train_histogram, config: ConversionConfig) -> intensity.IntensityMapping:
    """The mapping the manifest records: fitted on the training split's histogram, or linear."""
    if config.intensity == "linear":
        return intensity.linear_mapping()
    if train_histogram is None or int(train_histogram.sum()) == 0:
        raise VolumeError(None, "no training volume was converted; cannot fit the intensity mapping")
    return intensity.fit_equalization(train_histogram)


def build_manifest(shards, volumes, skipped, train_histogram, config: ConversionConfig, fingerprint: str) -> dict:
    """The manifest.

    Args:
      shards: dicts with split, shard (file name), records, bytes, crc32c.
      volumes: manifest entries of the converted volumes (with their split).
      skipped: {source, reason} of every input left out.
      train_histogram: summed HU histogram of the training volumes (or None).
      config: the conversion's settings.
      fingerprint: identifies inputs and settings, for resuming.
    """
    shards = sorted(shards, key=lambda s: s["shard"])
    volumes = sorted(volumes, key=lambda v: v["volume_id"])
    splits = {
        split: {
            "volumes": sum(1 for v in volumes if v["split"] == split),
            "patients": len({v["patient_key"] for v in volumes if v["split"] == split}),
            "blocks": sum(s["records"] for s in shards if s["split"] == split),
            "shards": [
                {"name": s["shard"], "records": s["records"], "bytes": s["bytes"], "crc32c": s["crc32c"]}
                for s in shards
                if s["split"] == split
            ],
        }
        for split in SPLITS
    }
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "cgan_ct_version": __version__,
        "plan_fingerprint": fingerprint,
        "block_size": config.block_size,
        "margin": config.margin,
        "stored_size": config.stored_size,
        "pad_hu": config.pad_hu,
        "edge_policy": "blocks cover the volume; voxels past its edge (and short volumes) are pad_hu",
        "spacing_policy": "native" if config.spacing_mm is None else {"resampled_to_mm": list(config.spacing_mm)},
        "split": {"by": "patient", "test_fraction": config.test_fraction, "seed": config.seed},
        "drop_outside_body": config.drop_outside_body,
        "subsample": config.subsample,
        "intensity": fit_intensity(train_histogram, config).to_json(),
        "counts": {
            "volumes": len(volumes),
            "blocks": sum(s["blocks"] for s in splits.values()),
            "dropped_outside_body": sum(v["dropped_outside_body"] for v in volumes),
            "skipped_inputs": len(skipped),
        },
        "splits": splits,
        "volumes": volumes,
        "skipped": list(skipped),
    }


def write_manifest(output_dir, manifest: dict) -> None:
    """Writes ``manifest.json`` atomically."""
    write_json_atomic(pathlib.Path(output_dir) / MANIFEST, manifest)


def load_manifest(dataset_dir) -> dict:
    """The manifest of a converted dataset; VolumeError if there is none."""
    path = pathlib.Path(dataset_dir) / MANIFEST
    if not path.exists():
        raise VolumeError(path, "no manifest: not a converted dataset, or its conversion did not finish")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VolumeError(path, f"manifest is not valid JSON ({exc})") from None
