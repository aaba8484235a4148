"""One conversion shard: read its volumes, cut blocks, write one TFRecord file.

This runs in worker processes and imports no TensorFlow. A shard is written
atomically (cgan_ct.tfrecord_io.ShardWriter); its record of what it holds (the
"receipt": volumes, skipped inputs, counts, checksum, HU histograms) is
written next to it, first, so a shard under its final name always has one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from cgan_ct import blocks, intensity, schema
from cgan_ct.body_mask import body_mask
from cgan_ct.config import ConversionConfig
from cgan_ct.errors import VolumeError
from cgan_ct.sources import VolumeSource, skipped_from_error
from cgan_ct.tfrecord_io import ShardWriter

WORK_DIR = ".work"
HISTOGRAM_STRIDE = 2  # every 2nd voxel along each axis feeds the intensity fit


@dataclasses.dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    count: int
    sources: tuple[VolumeSource, ...]
    config: ConversionConfig
    salt: str | None
    output_dir: pathlib.Path

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}.tfrecord"

    @property
    def path(self) -> pathlib.Path:
        return self.output_dir / self.name

    @property
    def receipt_path(self) -> pathlib.Path:
        return self.output_dir / WORK_DIR / f"{self.name}.json"


def _volume_blocks(volume, config: ConversionConfig):
    """(origin, block, padding voxels) of every block kept, and how many were dropped."""
    keep = None
    if config.drop_outside_body:
        mask = body_mask(volume.hu)
        keep = set()
        for origin in blocks.block_origins(volume.shape, config.block_size):
            z, y, x = origin
            b = config.block_size
            if mask[z : z + b, y : y + b, x : x + b].any():
                keep.add(origin)
    kept, dropped = [], 0
    for origin, block in blocks.iter_blocks_with_margin(volume.hu, config.block_size, config.margin, config.pad_hu):
        if keep is not None and origin not in keep:
            dropped += 1
            continue
        kept.append((origin, block, blocks.padding_voxels(volume.shape, origin, config.block_size)))
    return kept, dropped


def _write_volume(writer: ShardWriter, volume, config: ConversionConfig) -> dict:
    kept, dropped = _volume_blocks(volume, config)
    encoder = schema.BlockEncoder(config.stored_size, config.margin, volume.volume_id, volume.spacing_mm)
    for origin, block, padding in kept:
        writer.write(encoder.encode(block, origin, padding))
    return {
        "volume_id": volume.volume_id,
        "shape_zyx": list(volume.shape),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
        "blocks": len(kept),
        "padding_voxels": int(sum(p for _, _, p in kept)),
        "dropped_outside_body": dropped,
        "warnings": list(volume.warnings),
    }


def write_shard(task: ShardTask) -> dict:
    """Converts the task's volumes into its shard; returns the receipt.

    A volume that cannot be read is skipped (listed in the receipt); any other
    error aborts the shard, leaving nothing under its final name.
    """
    receipt = {"shard": task.name, "split": task.split, "volumes": [], "skipped": []}
    histogram = np.zeros(intensity.CLIP_HU[1] - intensity.CLIP_HU[0] + 1, np.int64)
    with ShardWriter(task.path) as writer:
        for source in task.sources:
            try:
                volume = source.read(task.salt, task.config.spacing_mm)
            except VolumeError as exc:
                receipt["skipped"].append(skipped_from_error(exc, task.salt, source.volume_id).to_json())
                continue
            entry = _write_volume(writer, volume, task.config)
            entry.update(patient_key=source.patient_key, split=task.split, shard=task.name)
            receipt["volumes"].append(entry)
            histogram += intensity.hu_histogram(volume.hu, stride=HISTOGRAM_STRIDE)
            del volume
        receipt.update(records=writer.records, bytes=writer.bytes, crc32c=writer.crc32c, histogram=histogram.tolist())
        _write_json_atomic(task.receipt_path, receipt)
        writer.commit()
    return receipt


def _write_json_atomic(path: pathlib.Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
