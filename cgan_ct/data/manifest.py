"""The manifest of a converted dataset: what it holds and how to read it back.

Written last, atomically: a dataset folder with a manifest is complete.
``Manifest`` is the one definition of ``manifest.json``; every reader loads it
with ``Manifest.load`` (or ``load_manifest``) and reads attributes, not keys.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from cgan_ct.config import ConversionConfig
from cgan_ct.constants import MANIFEST_FILE
from cgan_ct.data import schema
from cgan_ct.errors import InputError
from cgan_ct.io.json_files import read_json_object, record_fields, write_json_atomic
from cgan_ct.ops import intensity
from cgan_ct.version import __version__

MANIFEST = MANIFEST_FILE
SPLITS = ("train", "test")
_WHAT = "dataset manifest"


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One TFRecord shard: its file name in the dataset folder, records, size and CRC-32C."""

    name: str
    records: int
    bytes: int
    crc32c: str


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    volumes: int
    patients: int
    blocks: int
    shards: tuple[ShardInfo, ...]


@dataclasses.dataclass(frozen=True)
class VolumeEntry:
    """A converted volume: pseudonymous ids only, its grid, and where its blocks went."""

    volume_id: str
    patient_key: str
    shape_zyx: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    blocks: int
    padding_voxels: int
    dropped_outside_body: int
    warnings: tuple[str, ...]
    split: str
    shard: str | None = None  # the local engine's shard; the Beam engine's records are spread over shards
    condition_volume_id: str | None = None  # a paired condition's own volume (pseudonym)
    condition_settings: dict | None = None  # a simulated condition's per-volume settings (calibrated i0, own noise)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        for optional in ("shard", "condition_volume_id", "condition_settings"):
            if data[optional] is None:
                del data[optional]
        return data


@dataclasses.dataclass(frozen=True)
class SkippedInput:
    source: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """``manifest.json``, typed. Field order is the file's key order."""

    schema_version: int
    cgan_ct_version: str
    plan_fingerprint: str
    block_size: int
    margin: int
    stored_size: int
    pad_hu: int
    edge_policy: str
    spacing_policy: str | dict
    split: dict
    drop_outside_body: bool
    subsample: int
    intensity: dict
    counts: dict
    splits: dict[str, SplitInfo]
    volumes: tuple[VolumeEntry, ...]
    skipped: tuple[SkippedInput, ...]
    condition: dict | None = None  # schema 2: the paired condition stored with each block (condition_record)
    pyramid: str = "subsample"  # how a subsampled level was made (cgan_ct.ops.pyramid); before it: "subsample"

    @property
    def mapping(self) -> intensity.IntensityMapping:
        """The intensity mapping the dataset was normalized with."""
        return intensity.IntensityMapping.from_json(self.intensity)

    def volumes_in(self, split: str) -> tuple[VolumeEntry, ...]:
        return tuple(v for v in self.volumes if v.split == split)

    def to_json(self) -> dict:
        """The manifest as ``manifest.json`` holds it (lists, not tuples)."""
        data = dataclasses.asdict(self)
        data["volumes"] = [v.to_json() for v in self.volumes]
        return json.loads(json.dumps(data))

    @classmethod
    def from_json(cls, data: dict, path=None) -> Manifest:
        """The manifest in ``data`` (as read from ``path``, named in errors); refuses unknown schema versions."""
        version = data.get("schema_version")
        if version not in schema.READABLE_SCHEMA_VERSIONS:
            raise InputError(
                path,
                f"{_WHAT} has schema_version {version!r}; this cgan-ct reads "
                f"{', '.join(map(str, schema.READABLE_SCHEMA_VERSIONS))}: convert the data again or upgrade cgan-ct",
            )
        try:
            fields = record_fields(cls, data, path, _WHAT)
            fields["splits"] = {
                name: SplitInfo(**{**split, "shards": tuple(ShardInfo(**s) for s in split["shards"])})
                for name, split in fields["splits"].items()
            }
            fields["volumes"] = tuple(
                VolumeEntry(
                    **{
                        **v,
                        "shape_zyx": tuple(v["shape_zyx"]),
                        "spacing_mm": tuple(v["spacing_mm"]),
                        "warnings": tuple(v["warnings"]),
                    }
                )
                for v in fields["volumes"]
            )
            fields["skipped"] = tuple(SkippedInput(**s) for s in fields["skipped"])
            return cls(**fields)
        except (TypeError, KeyError, AttributeError) as exc:
            raise InputError(path, f"{_WHAT} is malformed ({exc})") from None

    @classmethod
    def load(cls, dataset_dir) -> Manifest:
        """The manifest of a converted dataset; InputError if there is none or it cannot be read."""
        path = pathlib.Path(dataset_dir) / MANIFEST_FILE
        if not path.exists():
            raise InputError(path, "no manifest: not a converted dataset, or its conversion did not finish")
        return cls.from_json(read_json_object(path, _WHAT), path)

    def save(self, dataset_dir) -> pathlib.Path:
        """Writes ``manifest.json`` atomically."""
        return write_json_atomic(pathlib.Path(dataset_dir) / MANIFEST_FILE, self.to_json())


def condition_record(config: ConversionConfig) -> dict | None:
    """What the manifest says of the stored condition: None, {"kind": "paired"} or {"kind": "lowdose", dose...}."""
    if config.condition is None:
        return None
    if config.condition == "lowdose":
        return {"kind": "lowdose", **config.lowdose.to_json()}
    return {"kind": config.condition}


def fit_intensity(train_histogram, config: ConversionConfig) -> intensity.IntensityMapping:
    """The mapping the manifest records: fitted on the training split's histogram, or linear.

    A conversion without a training volume is refused whatever the mapping (with equalization it has
    nothing to fit; with the linear window, which needs no fit, it would be a dataset nothing can train on).
    """
    if train_histogram is None or int(train_histogram.sum()) == 0:
        raise InputError(None, "no training volume was converted; nothing to train on or to fit the intensity to")
    if config.intensity == "linear":
        return intensity.linear_mapping()
    return intensity.fit_equalization(train_histogram)


def build_manifest(shards, volumes, skipped, train_histogram, config: ConversionConfig, fingerprint: str) -> Manifest:
    """The manifest.

    Args:
      shards: dicts with split, shard (file name), records, bytes, crc32c.
      volumes: manifest entries of the converted volumes (dicts, with their split and shard).
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
    record = {
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
        "pyramid": config.pyramid if config.subsample > 1 else "subsample",
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
        "condition": condition_record(config),
    }
    return Manifest.from_json(record)


def write_manifest(output_dir, manifest: Manifest) -> pathlib.Path:
    """Writes ``manifest.json`` atomically."""
    return manifest.save(output_dir)


def load_manifest(dataset_dir) -> Manifest:
    """``Manifest.load``: the manifest of a converted dataset; InputError if there is none."""
    return Manifest.load(dataset_dir)
