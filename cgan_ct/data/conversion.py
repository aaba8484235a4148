"""CT volumes -> sharded TFRecords of blocks, with a manifest. Resumable and atomic.

The run: find the volumes, split patients into train and test, pack volumes
into shards, write the shards that are not done yet (in parallel), then fit
the intensity mapping on the training split and write ``manifest.json`` last.
A folder with a manifest is complete; without one, a later run with the same
inputs and settings picks up where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil

import numpy as np

from cgan_ct.config import ConversionConfig
from cgan_ct.data import schema
from cgan_ct.data.manifest import MANIFEST, SPLITS, Manifest, build_manifest, write_manifest
from cgan_ct.data.pairing import pair_sources
from cgan_ct.data.shard_writer import WORK_DIR, ShardTask
from cgan_ct.data.workers import run_tasks
from cgan_ct.errors import InputError
from cgan_ct.io.atomic_files import TMP_PREFIX, folder_lock
from cgan_ct.io.sources import VolumeSource, discover


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What a run did. ``skipped`` pairs a location (console only) with a reason; ``warnings`` are for the console."""

    output_dir: pathlib.Path
    manifest: Manifest
    skipped: list[tuple[str, str]]
    shards_written: int
    shards_reused: int
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.manifest.skipped


def split_patients(patient_keys, test_fraction: float, seed: int) -> dict[str, str]:
    """Patient key -> "train" or "test": a seeded shuffle of the sorted keys.

    round(test_fraction * n) patients go to test, at least one when there are
    two or more patients and the fraction is positive, never all of them.
    """
    keys = sorted(set(patient_keys))
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = round(test_fraction * len(keys))
    if test_fraction > 0 and len(keys) >= 2:
        n_test = min(max(1, n_test), len(keys) - 1)
    test = {keys[i] for i in order[:n_test]}
    return {k: ("test" if k in test else "train") for k in keys}


def _estimated_bytes(source: VolumeSource, config: ConversionConfig) -> int:
    voxels = source.estimated_voxels / config.subsample**3
    return int(voxels / config.block_size**3 * config.record_bytes * 1.1)


def plan_shards(sources, config: ConversionConfig, salt, output_dir: pathlib.Path) -> list[ShardTask]:
    """Packs each split's volumes (in volume-id order) into shards of about the target size."""
    splits = split_patients([s.patient_key for s in sources], config.test_fraction, config.seed)
    target = config.shard_target_mb * 2**20
    tasks = []
    for split in SPLITS:
        groups, current, size = [], [], 0
        for source in (s for s in sources if splits[s.patient_key] == split):
            estimate = _estimated_bytes(source, config)
            if current and size + estimate > 1.25 * target:  # would overshoot: start a new shard
                groups.append(current)
                current, size = [], 0
            current.append(source)
            size += estimate
        groups += [current] if current else []
        tasks += [ShardTask(split, i, len(groups), tuple(g), config, salt, output_dir) for i, g in enumerate(groups)]
    return tasks


def _config_record(config: ConversionConfig) -> dict:
    """The settings that identify a conversion (those of a condition only where one is stored)."""
    record = dataclasses.asdict(config)
    if config.condition != "lowdose":
        del record["lowdose"]
    if config.condition is None:
        del record["condition"]  # unconditioned datasets fingerprint as before schema 2
    if config.nonfinite == "error":
        del record["nonfinite"]  # the default fingerprints as before the option existed
    if config.pyramid == "subsample":
        del record["pyramid"]  # likewise
    return record


def plan_fingerprint(tasks: list[ShardTask], config: ConversionConfig) -> str:
    plan = {
        "config": _config_record(config),
        "schema_version": schema.SCHEMA_VERSION,
        "shards": {t.name: [s.volume_id for s in t.sources] for t in tasks},
        **(
            {"paired": {t.name: [s.paired.volume_id for s in t.sources] for t in tasks}}
            if config.condition == "paired"
            else {}
        ),
    }
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def _remove_outputs(output_dir: pathlib.Path) -> None:
    """Removes what a conversion writes (and nothing else) from ``output_dir``."""
    for split in SPLITS:
        for path in output_dir.glob(f"{split}-*-of-*.tfrecord"):
            path.unlink()
    (output_dir / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(output_dir / WORK_DIR, ignore_errors=True)


def _remove_temporaries(output_dir: pathlib.Path) -> None:
    for folder in (output_dir, output_dir / WORK_DIR):
        for path in folder.glob(f"{TMP_PREFIX}*"):
            path.unlink()


def _prepare(output_dir: pathlib.Path, fingerprint: str, overwrite: bool) -> Manifest | None:
    """Readies ``output_dir``; returns the manifest if the same conversion is complete."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _remove_outputs(output_dir)
    if (output_dir / MANIFEST).exists():
        manifest = Manifest.load(output_dir)
        if manifest.plan_fingerprint == fingerprint:
            return manifest
        raise InputError(output_dir, "holds a different conversion; overwrite it or use another folder")
    plan_path = output_dir / WORK_DIR / "plan.json"
    if plan_path.exists() and json.loads(plan_path.read_text()).get("fingerprint") != fingerprint:
        message = "holds an unfinished conversion of other inputs or settings; overwrite it or use another folder"
        raise InputError(output_dir, message)
    plan_path.parent.mkdir(exist_ok=True)
    plan_path.write_text(json.dumps({"fingerprint": fingerprint}))
    _remove_temporaries(output_dir)
    return None


def _done_receipt(task: ShardTask) -> dict | None:
    """The receipt of a shard a previous run finished (an empty shard has a receipt and no file)."""
    if not task.receipt_path.exists():
        return None
    receipt = json.loads(task.receipt_path.read_text())
    if receipt.get("records") == 0:
        return receipt
    return receipt if task.path.exists() and receipt.get("bytes") == task.path.stat().st_size else None


def convert(
    inputs,
    output_dir,
    config: ConversionConfig | None = None,
    salt: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress=None,
    condition_inputs=None,
    patients: dict[str, str] | None = None,
) -> ConversionReport:
    """Converts the CT volumes under ``inputs`` into a TFRecord dataset in ``output_dir``.

    Args:
      inputs: DICOM folders, volume files, or root folders holding them.
      output_dir: the dataset folder (created if needed).
      config: block size, margin, split, shard size...
      salt: salt of the pseudonymous ids (default $CGAN_CT_SALT).
      workers: processes (default: all cores).
      overwrite: discard whatever conversion the folder holds and start over.
      progress: called as ``progress(receipt, shards_done, shards_to_do)`` when
        a shard completes.
      condition_inputs: with ``config.condition == "paired"``: the same
        patients' condition (e.g. real low-dose) series, stored beside each
        block (cgan_ct.data.pairing).
      patients: {resolved volume file path: patient id} (cgan_ct.io.sources.
        read_patients_table), so that volume files of one patient share a
        split; without it each file is its own patient, with a warning.

    Returns:
      A ConversionReport; ``report.complete`` is False when inputs were skipped.

    Raises:
      InputError: the output folder holds another conversion, or nothing
        could be converted (naming every input and why). Then nothing is left
        behind in ``output_dir`` that a rerun would have to be told to discard.
    """
    config = config or ConversionConfig()
    output_dir = pathlib.Path(output_dir)
    sources, skipped = discover(inputs, salt, patients)
    if (config.condition == "paired") != bool(condition_inputs):
        raise ValueError("condition inputs go with condition='paired', and a paired conversion needs them")
    if condition_inputs:
        condition_sources, condition_skipped = discover(condition_inputs, salt, patients)
        sources, unpaired = pair_sources(sources, condition_sources, salt)
        skipped += condition_skipped + unpaired
    console_skips = [(s.path, s.reason) for s in skipped]
    if not sources:
        raise InputError(None, _nothing_converted("no volume to convert", console_skips))
    tasks = plan_shards(sources, config, salt, output_dir)
    fingerprint = plan_fingerprint(tasks, config)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(output_dir, "convert"):
            return _convert_locked(
                output_dir,
                sources,
                skipped,
                tasks,
                fingerprint,
                config,
                overwrite,
                workers,
                progress,
                patients,
                console_skips,
            )
    finally:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # nothing converted: a rerun starts clean, without --overwrite


def _convert_locked(
    output_dir, sources, skipped, tasks, fingerprint, config, overwrite, workers, progress, patients, console_skips
):
    existing = _prepare(output_dir, fingerprint, overwrite)
    warnings = _split_warnings(sources, patients)
    if existing is not None:
        return ConversionReport(output_dir, existing, console_skips, 0, len(tasks), warnings)
    done = {t.name: r for t in tasks if (r := _done_receipt(t)) is not None}
    todo = [t for t in tasks if t.name not in done]
    receipts = list(done.values()) + run_tasks(todo, workers or os.cpu_count() or 1, progress)
    locations = {s.volume_id: str(s.location) for s in sources}
    console_skips += [(locations.get(s["source"], s["source"]), s["reason"]) for r in receipts for s in r["skipped"]]
    if not any(r["volumes"] for r in receipts if r["split"] == "train"):
        _remove_outputs(output_dir)  # nothing in it can be used: a rerun starts clean, without --overwrite
        raise InputError(None, _nothing_converted("no training volume was converted", console_skips))
    manifest = manifest_from_receipts(receipts, config, fingerprint, [s.to_json() for s in skipped])
    write_manifest(output_dir, manifest)
    shutil.rmtree(output_dir / WORK_DIR, ignore_errors=True)
    return ConversionReport(output_dir, manifest, console_skips, len(todo), len(done), warnings)


def _nothing_converted(what: str, skips: list[tuple[str, str]]) -> str:
    """The error of a conversion with nothing to train on: every input and why (for the console only)."""
    reasons = "; ".join(f"{where}: {reason}" for where, reason in skips) or "no input was given"
    return f"{what}; nothing written. Skipped: {reasons}"


def _split_warnings(sources: list[VolumeSource], patients: dict[str, str] | None) -> tuple[str, ...]:
    files = [s for s in sources if s.file is not None]
    if len(files) < 2:
        return ()
    if patients is None:
        return (
            f"{len(files)} volume files are split into train and test one file per patient: two scans of one "
            "patient can land in both splits. Give --patients FILE.csv (file,patient) to keep patients together.",
        )
    unlisted = sum(1 for s in files if s.patient is None)
    if unlisted:
        return (f"{unlisted} of {len(files)} volume files are not in the patients table; each is its own patient",)
    return ()


def manifest_from_receipts(receipts, config: ConversionConfig, fingerprint: str, skipped_inputs) -> Manifest:
    receipts = sorted(receipts, key=lambda r: r["shard"])
    shards = [{k: r[k] for k in ("split", "shard", "records", "bytes", "crc32c")} for r in receipts if r["records"]]
    train = [np.asarray(r["histogram"], np.int64) for r in receipts if r["split"] == "train"]
    return build_manifest(
        shards=shards,
        volumes=[v for r in receipts for v in r["volumes"]],
        skipped=skipped_inputs + [s for r in receipts for s in r["skipped"]],
        train_histogram=np.sum(train, axis=0) if train else None,
        config=config,
        fingerprint=fingerprint,
    )
