"""One volume -> its block records, manifest entry and HU histogram.

The per-volume step of every conversion, shared by the local tool
(cgan_ct.data.shard_writer) and the Beam pipeline (cgan_ct.data.beam_conversion), so
both produce the same records for the same volume. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from cgan_ct.config import ConversionConfig
from cgan_ct.data import schema
from cgan_ct.io.sources import VolumeSource
from cgan_ct.io.volume import subsample_volume
from cgan_ct.ops import blocks, intensity
from cgan_ct.ops.body_mask import body_mask

HISTOGRAM_STRIDE = 2  # every 2nd voxel along each axis feeds the intensity fit


@dataclasses.dataclass
class ConvertedVolume:
    """``records`` streams the serialized blocks (z-major order); iterate it once."""

    entry: dict
    records: Iterator[bytes]
    histogram: np.ndarray


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


def convert_volume(source: VolumeSource, config: ConversionConfig, salt: str | None) -> ConvertedVolume:
    """Reads ``source`` and prepares its records; raises VolumeError if it cannot be read."""
    volume = subsample_volume(source.read(salt, config.spacing_mm), config.subsample)
    kept, dropped = _volume_blocks(volume, config)
    encoder = schema.BlockEncoder(config.stored_size, config.margin, volume.volume_id, volume.spacing_mm)
    records = (encoder.encode(block, origin, padding) for origin, block, padding in kept)
    entry = {
        "volume_id": volume.volume_id,
        "patient_key": source.patient_key,
        "shape_zyx": list(volume.shape),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
        "blocks": len(kept),
        "padding_voxels": int(sum(p for _, _, p in kept)),
        "dropped_outside_body": dropped,
        "warnings": list(volume.warnings),
    }
    return ConvertedVolume(entry, records, intensity.hu_histogram(volume.hu, stride=HISTOGRAM_STRIDE))
