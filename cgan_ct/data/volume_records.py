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
from cgan_ct.data.pairing import align_pair
from cgan_ct.io.sources import VolumeSource, redact
from cgan_ct.io.volume import subsample_volume
from cgan_ct.ops import blocks, intensity
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.ops.lowdose import calibrate_i0, simulate_lowdose
from cgan_ct.ops.pyramid import downsample

HISTOGRAM_STRIDE = 2  # every 2nd voxel along each axis feeds the intensity fit


@dataclasses.dataclass
class ConvertedVolume:
    """``records`` streams the serialized blocks (z-major order); iterate it once."""

    entry: dict
    records: Iterator[bytes]
    histogram: np.ndarray


def _volume_blocks(volume, config: ConversionConfig, condition_hu=None):
    """(origin, block, padding voxels, condition block or None) of every block kept, and how many were dropped."""
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
    cut = lambda hu: blocks.iter_blocks_with_margin(hu, config.block_size, config.margin, config.pad_hu)  # noqa: E731
    cut_volume = list(cut(volume.hu))
    conditions = [b for _, b in cut(condition_hu)] if condition_hu is not None else [None] * len(cut_volume)
    for (origin, block), condition in zip(cut_volume, conditions, strict=True):
        if keep is not None and origin not in keep:
            dropped += 1
            continue
        kept.append((origin, block, blocks.padding_voxels(volume.shape, origin, config.block_size), condition))
    return kept, dropped


def _with_condition(volume, source: VolumeSource, config: ConversionConfig, salt: str | None):
    """The volume (cropped to a paired condition's slices), its condition in int16 HU (or None), and
    the simulation's per-volume settings (its calibrated i0 and own noise; or None)."""
    if config.condition == "lowdose":
        i0, own_noise_hu = calibrate_i0(volume.hu, volume.spacing_mm, config.lowdose)
        settings = dataclasses.replace(config.lowdose, i0=i0)
        simulated = simulate_lowdose(volume.hu, volume.spacing_mm, settings, key=volume.volume_id)
        return volume, np.rint(simulated).astype(np.int16), {"i0": i0, "own_noise_hu": own_noise_hu}
    if config.condition == "paired":
        if source.paired is None:
            raise ValueError(f"{source.volume_id}: a paired conversion needs each source's condition volume")
        return (*align_pair(volume, source.paired.read(salt, config.spacing_mm, config.nonfinite)), None)
    return volume, None, None


def _finite(values: dict) -> dict:
    """JSON has no NaN: unmeasured values are None."""
    return {k: (round(float(v), 3) if np.isfinite(v) else None) for k, v in values.items()}


def convert_volume(source: VolumeSource, config: ConversionConfig, salt: str | None) -> ConvertedVolume:
    """Reads ``source`` and prepares its records; raises InputError if it cannot be read."""
    volume, condition_hu, condition_settings = _with_condition(
        source.read(salt, config.spacing_mm, config.nonfinite), source, config, salt
    )
    if config.subsample > 1:
        volume = subsample_volume(volume, config.subsample, config.pyramid)
        condition_hu = (
            None
            if condition_hu is None
            else np.rint(downsample(condition_hu, config.subsample, config.pyramid)).astype(np.int16)
        )
    kept, dropped = _volume_blocks(volume, config, condition_hu)
    encoder = schema.BlockEncoder(config.stored_size, config.margin, volume.volume_id, volume.spacing_mm)
    records = (encoder.encode(block, origin, padding, condition) for origin, block, padding, condition in kept)
    entry = {
        "volume_id": volume.volume_id,
        "patient_key": source.patient_key,
        "shape_zyx": list(volume.shape),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing_mm],
        "blocks": len(kept),
        "padding_voxels": int(sum(p for _, _, p, _ in kept)),
        "dropped_outside_body": dropped,
        "warnings": [redact(w, source.location) for w in volume.warnings],  # readers' notes may quote a file
        **({"condition_volume_id": source.paired.volume_id} if source.paired is not None else {}),
        **({"condition_settings": _finite(condition_settings)} if condition_settings else {}),
    }
    return ConvertedVolume(entry, records, intensity.hu_histogram(volume.hu, stride=HISTOGRAM_STRIDE))
