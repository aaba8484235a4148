"""Summaries, verification and a picture of a converted dataset."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from cgan_ct.constants import LUNG_WINDOW
from cgan_ct.data import schema
from cgan_ct.data.manifest import SPLITS, ShardInfo, load_manifest
from cgan_ct.data.tfrecord_io import file_crc32c, iter_records


def summarize(dataset_dir) -> str:
    """A few lines on what the dataset holds."""
    m = load_manifest(dataset_dir)
    lines = [
        f"dataset {dataset_dir}: schema {m.schema_version}, blocks {m.block_size}^3 + margin {m.margin} "
        f"(stored {m.stored_size}^3 int16 HU), intensity {m.intensity['kind']}, "
        f"spacing {m.spacing_policy}"
    ]
    for split in SPLITS:
        info = m.splits[split]
        size_mb = sum(s.bytes for s in info.shards) / 2**20
        lines.append(
            f"  {split:<5} {info.patients} patients  {info.volumes} volumes  {info.blocks} blocks  "
            f"{len(info.shards)} shards  {size_mb:.1f} MB"
        )
    if m.skipped:
        lines.append(f"  skipped inputs: {len(m.skipped)}")
        lines += [f"    {s.source}: {s.reason}" for s in m.skipped]
    return "\n".join(lines)


def _shard_problems(dataset_dir: pathlib.Path, shard: ShardInfo, stored_size: int, seen: dict) -> list[str]:
    import tensorflow as tf

    path = dataset_dir / shard.name
    if not path.exists():
        return [f"{path}: missing"]
    if file_crc32c(path) != shard.crc32c:
        return [f"{path}: CRC-32C differs from the manifest"]
    records = 0
    data = tf.data.TFRecordDataset(str(path)).map(lambda r: schema.decode_block(r, stored_size)).batch(256)
    try:
        for batch in data:
            records += int(batch["hu"].shape[0])
            for vid, origin in zip(batch["volume_id"].numpy(), batch["origin_zyx"].numpy(), strict=True):
                key = (vid.decode(), tuple(int(o) for o in origin))
                seen[key] = seen.get(key, 0) + 1
    except tf.errors.OpError as exc:
        return [f"{path}: record {records} does not decode ({exc.message.splitlines()[0]})"]
    if records != shard.records:
        return [f"{path}: {records} records, manifest says {shard.records}"]
    return []


def verify(dataset_dir) -> list[str]:
    """Problems found (empty when the dataset verifies): checksums, counts, decoding, duplicates."""
    dataset_dir = pathlib.Path(dataset_dir)
    m = load_manifest(dataset_dir)
    seen: dict = {}
    problems = []
    listed = set()
    for split in SPLITS:
        for shard in m.splits[split].shards:
            listed.add(shard.name)
            problems += _shard_problems(dataset_dir, shard, m.stored_size, seen)
    extra = sorted(p.name for p in dataset_dir.glob("*.tfrecord") if p.name not in listed)
    problems += [f"{dataset_dir / name}: shard not in the manifest" for name in extra]
    duplicates = [k for k, n in seen.items() if n > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} blocks appear more than once, e.g. {duplicates[0]}")
    per_volume: dict = {}
    for vid, _ in seen:
        per_volume[vid] = per_volume.get(vid, 0) + 1
    for volume in m.volumes:
        if not problems and per_volume.get(volume.volume_id, 0) != volume.blocks:
            problems.append(
                f"volume {volume.volume_id}: {per_volume.get(volume.volume_id, 0)} blocks in the shards, "
                f"manifest says {volume.blocks}"
            )
    return problems


def _tile(hu_block: np.ndarray, margin: int) -> np.ndarray:
    """Central axial slice of a stored block in the lung window, margin dimmed: uint8 [S, S]."""
    low, high = LUNG_WINDOW.range_hu
    image = np.clip((hu_block[hu_block.shape[0] // 2] - low) / (high - low), 0, 1)
    if margin:
        dim = np.full(image.shape, 0.55)
        dim[margin:-margin, margin:-margin] = 1.0
        image = image * dim
    return (image * 255).astype(np.uint8)


def montage_png(dataset_dir, png_path, count: int = 36, seed: int = 0) -> pathlib.Path:
    """Writes a grid of ``count`` random blocks (all splits) as a PNG; returns its path."""
    if count < 1:
        raise ValueError(f"a montage needs at least one block, got count {count}")
    dataset_dir = pathlib.Path(dataset_dir)
    m = load_manifest(dataset_dir)
    shards = [s for split in SPLITS for s in m.splits[split].shards]
    total = sum(s.records for s in shards)
    chosen = set(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False).tolist())
    size, tiles, index = m.stored_size, [], 0
    for shard in shards:
        for record in iter_records(dataset_dir / shard.name):
            if index in chosen:
                hu = np.frombuffer(_hu_bytes(record), "<i2").reshape(size, size, size)
                tiles.append(_tile(hu, m.margin))
            index += 1
    columns = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / columns))
    gap = 2
    canvas = np.zeros((rows * (size + gap), columns * (size + gap)), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size] = tile
    scale = max(1, 256 // size)
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    png_path = pathlib.Path(png_path)
    image.save(png_path)
    return png_path


def _hu_bytes(record: bytes) -> bytes:
    import tensorflow as tf

    return tf.train.Example.FromString(record).features.feature[schema.HU].bytes_list.value[0]
