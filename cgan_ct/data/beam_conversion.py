"""The conversion as an Apache Beam pipeline, for archives one machine cannot convert.

Same discovery, patient split, shard counts and per-volume step
(cgan_ct.data.volume_records) as the local tool, so the same inputs give the same
records; only the orchestration differs: Beam runs the per-volume step on its
workers and writes the shards (atomically, through its own temporary files).
Runs on the DirectRunner here and unchanged on Dataflow, Flink or Spark,
given inputs that the workers can read and an output folder that the driver
can read back (local disk or a shared filesystem), where the manifest is then
written last.

Requires the optional extra: pip install 'cgan-ct[beam]'.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from cgan_ct.config import ConversionConfig
from cgan_ct.data.conversion import plan_fingerprint, plan_shards
from cgan_ct.data.manifest import SPLITS, Manifest, build_manifest, write_manifest
from cgan_ct.data.tfrecord_io import file_crc32c, iter_records
from cgan_ct.data.volume_records import convert_volume
from cgan_ct.errors import InputError
from cgan_ct.io.sources import discover, skipped_from_error

_WORK = ".beam-work"


class _ConvertVolume(beam.DoFn):
    """(split, source) -> (split, record)...; tagged "volumes" and "skipped" side outputs (JSON lines)."""

    def __init__(self, config: ConversionConfig, salt: str | None):
        self.config, self.salt = config, salt

    def process(self, item):
        split, source = item
        try:
            converted = convert_volume(source, self.config, self.salt)
        except InputError as exc:
            yield beam.pvalue.TaggedOutput(
                "skipped", json.dumps(skipped_from_error(exc, self.salt, source.volume_id).to_json())
            )
            return
        for record in converted.records:
            yield split, record
        entry = {**converted.entry, "split": split, "histogram": converted.histogram.tolist()}
        yield beam.pvalue.TaggedOutput("volumes", json.dumps(entry))


def _read_lines(pattern_dir: pathlib.Path, stem: str) -> list[dict]:
    return [json.loads(line) for path in sorted(pattern_dir.glob(f"{stem}*")) for line in path.read_text().splitlines()]


def _shard_infos(output_dir: pathlib.Path) -> list[dict]:
    infos = []
    for split in SPLITS:
        for path in sorted(output_dir.glob(f"{split}-*-of-*.tfrecord")):
            records = sum(1 for _ in iter_records(path))
            infos.append(
                {
                    "split": split,
                    "shard": path.name,
                    "records": records,
                    "bytes": path.stat().st_size,
                    "crc32c": file_crc32c(path),
                }
            )
    return infos


def convert_with_beam(
    inputs,
    output_dir,
    config: ConversionConfig | None = None,
    salt: str | None = None,
    beam_args=(),
    patients: dict[str, str] | None = None,
) -> Manifest:
    """Runs the conversion as a Beam pipeline; returns the manifest it wrote.

    Args:
      inputs, output_dir, config, salt: as for cgan_ct.data.conversion.convert.
      beam_args: pipeline options, e.g. ["--runner=DataflowRunner", ...]
        (default: the DirectRunner).

    Raises:
      InputError: the output folder is not empty, or nothing could be converted.
    """
    config = config or ConversionConfig()
    output_dir = pathlib.Path(output_dir)
    if config.condition == "paired":
        raise InputError(output_dir, "a paired conversion (condition inputs) runs with the local engine only")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise InputError(output_dir, "the Beam conversion needs an empty or new output folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    sources, skipped = discover(inputs, salt, patients)
    tasks = plan_shards(sources, config, salt, output_dir)
    split_of = {s.volume_id: t.split for t in tasks for s in t.sources}
    shard_counts = {split: sum(1 for t in tasks if t.split == split) for split in SPLITS}
    work = output_dir / _WORK
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
        items = pipeline | "Volumes" >> beam.Create([(split_of[s.volume_id], s) for s in sources])
        out = items | "Convert" >> beam.ParDo(_ConvertVolume(config, salt)).with_outputs(
            "volumes", "skipped", main="records"
        )
        for split in (s for s in SPLITS if shard_counts[s]):
            (
                out.records
                | f"Only{split}" >> beam.Filter(lambda kv, wanted=split: kv[0] == wanted)
                | f"Records{split}" >> beam.Values()
                | f"Write{split}"
                >> beam.io.WriteToTFRecord(
                    str(output_dir / split), file_name_suffix=".tfrecord", num_shards=shard_counts[split]
                )
            )
        out.volumes | "WriteVolumes" >> beam.io.WriteToText(str(work / "volumes"), file_name_suffix=".jsonl")
        out.skipped | "WriteSkipped" >> beam.io.WriteToText(str(work / "skipped"), file_name_suffix=".jsonl")
    volumes = _read_lines(work, "volumes")
    train = [np.asarray(v.pop("histogram"), np.int64) for v in volumes if v["split"] == "train"]
    for v in volumes:
        v.pop("histogram", None)
    manifest = build_manifest(
        shards=_shard_infos(output_dir),
        volumes=volumes,
        skipped=[s.to_json() for s in skipped] + _read_lines(work, "skipped"),
        train_histogram=np.sum(train, axis=0) if train else None,
        config=config,
        fingerprint=plan_fingerprint(tasks, config),
    )
    write_manifest(output_dir, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest
