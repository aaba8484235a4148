"""Inference over an archive as an Apache Beam pipeline: the local loop's per-scan step on Beam's workers.

Each worker loads the model once (``DoFn.setup``) and runs ``archive.ScanRunner.run`` on the scans Beam
gives it; the scans' folders go straight to the output folder (which every worker must be able to write:
local disk for the DirectRunner, a shared filesystem for Flink / Spark / Dataflow), as atomically as in the
local loop. The rows come back to the driver through text files in a hidden work folder, removed after.

Requires the optional extra: pip install 'cgan-ct[beam]'.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from cgan_ct.inference.archive import ModelRef, ScanRunner, ScanSettings

_WORK = ".beam-infer-"


class _InferScan(beam.DoFn):
    """source -> the scan's row (JSON) with the model as the worker loaded it, the model loaded once per worker."""

    def __init__(self, ref: ModelRef, settings: ScanSettings, out: str, salt: str | None, overwrite: bool):
        self.ref, self.settings, self.out, self.salt, self.overwrite = ref, settings, out, salt, overwrite
        self.runner = None

    def setup(self):
        from cgan_ct.inference.inference import BlockModel

        model = BlockModel(self.ref.spec, precision=self.ref.precision)
        self.runner = ScanRunner(model, self.ref, self.settings, self.out, self.salt, self.overwrite)

    def process(self, source):
        yield json.dumps({**self.runner.run(source), "model": self.runner.describe()})


def infer_with_beam(
    sources, ref: ModelRef, settings: ScanSettings, out, salt: str | None, overwrite: bool = False, beam_args=()
) -> tuple[list[dict], dict]:
    """Runs every scan of ``sources`` (``archive.find_scans``) through the model on Beam; (the rows, in the
    order of ``sources``; the model as the workers loaded it, ``ScanRunner.describe``). ``beam_args``: pipeline
    options (default: the DirectRunner)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / f"{_WORK}{uuid.uuid4().hex[:8]}"
    try:
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
            (
                pipeline
                | "Scans" >> beam.Create(list(sources))
                | "Infer" >> beam.ParDo(_InferScan(ref, settings, str(out), salt, overwrite))
                | "Rows" >> beam.io.WriteToText(str(work / "rows"), file_name_suffix=".jsonl")
            )
        rows = [json.loads(line) for path in sorted(work.glob("rows*")) for line in path.read_text().splitlines()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    order = {s.volume_id: i for i, s in enumerate(sources)}
    models = [row.pop("model") for row in rows]
    return sorted(rows, key=lambda row: order[row["scan"]]), models[0]
