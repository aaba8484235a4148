"""One conversion shard: read its volumes, cut blocks, write one TFRecord file.

This runs in worker processes and imports no TensorFlow. A shard is written
atomically (cgan_ct.data.tfrecord_io.ShardWriter); its record of what it holds (the
"receipt": volumes, skipped inputs, counts, checksum, HU histograms) is
written next to it, first, so a shard under its final name always has one.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from cgan_ct.config import ConversionConfig
from cgan_ct.data.tfrecord_io import ShardWriter
from cgan_ct.data.volume_records import convert_volume
from cgan_ct.errors import InputError
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.io.sources import VolumeSource, skipped_from_error
from cgan_ct.ops import intensity

WORK_DIR = ".work"


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


# What reading one volume can raise besides InputError, from a header no check foresaw: the volume
# is skipped with the error's text, and the rest of the archive is converted.
_VOLUME_FAILURES = (ValueError, ArithmeticError, MemoryError, OSError, RuntimeError, IndexError, KeyError, TypeError)


def write_shard(task: ShardTask) -> dict:
    """Converts the task's volumes into its shard; returns the receipt.

    A volume that cannot be read is skipped (listed in the receipt), whatever
    the error. A shard left with no records is not written: its receipt says
    so (``records`` 0) and the manifest leaves it out.
    """
    receipt = {"shard": task.name, "split": task.split, "volumes": [], "skipped": []}
    histogram = np.zeros(intensity.CLIP_HU[1] - intensity.CLIP_HU[0] + 1, np.int64)
    with ShardWriter(task.path) as writer:
        for source in task.sources:
            try:
                converted = convert_volume(source, task.config, task.salt)
            except InputError as exc:
                receipt["skipped"].append(skipped_from_error(exc, task.salt, source.volume_id).to_json())
                continue
            except _VOLUME_FAILURES as exc:
                error = InputError(source.location, f"cannot be read ({type(exc).__name__}: {exc})")
                receipt["skipped"].append(skipped_from_error(error, task.salt, source.volume_id).to_json())
                continue
            for record in converted.records:  # an error here is ours, not the input's: it aborts the shard
                writer.write(record)
            receipt["volumes"].append({**converted.entry, "split": task.split, "shard": task.name})
            histogram += converted.histogram
        receipt.update(records=writer.records, bytes=writer.bytes, crc32c=writer.crc32c, histogram=histogram.tolist())
        write_json_atomic(task.receipt_path, receipt)
        if writer.records:
            writer.commit()
    return receipt
