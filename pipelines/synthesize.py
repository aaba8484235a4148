"""cgan-ct-synthesize: full-resolution CT volumes of patients who do not exist.

  cgan-ct-synthesize --model_dir CASCADE --output_dir OUT [--count 1] [--seed 0] [--slices N]
                     [--format nifti,dicom] [--overlap 0.25] [--batch 16] [--nograin]
  cgan-ct-synthesize --model pretrained:synthesis --output_dir OUT ...

CASCADE is the cascade/ folder of cgan-ct-train-cascade, or pretrained:synthesis,
the cascade shipped with the package (read its model card first:
cgan_ct/model/pretrained_models/synthesis/MODEL_CARD.md; --model is another
name for --model_dir). Volume i is drawn
from seed + i and written to OUT/synthetic_<i>/ as volume.nii.gz and/or a
DICOM series (dicom/) marked as synthetic (image comments, derivation), with new
UIDs and no patient attributes, by way of a hidden OUT/.tmp-synthetic_<i>/
renamed into place when complete. OUT/synthesis.json records the request
(cascade, seed, slices, formats) and the seed and time per volume.

Run it again to resume: after a kill, or with a larger --count, the volumes an
earlier run with the same cascade, --seed, --slices and --format left complete
are kept untouched and the others are drawn; stale hidden folders are removed.

A cascade trained since 2026-12-07 (and pretrained:synthesis) gives its volumes a fitted texture after the
stages: the soft-tissue mottle smoothed out and real CT's grain added (cgan_ct.synthesis.grain; BUILD_NOTES
"Output grain"). --nograin leaves it out: the volumes as the GAN stages and the intensity calibration make
them.
A cascade trained with --placement (experimental) also records its training volumes' placements (in-plane
spacing and body offset: cascade.json's placements): each volume's field of view and body position are then
drawn from them by its seed, the coarse draw moved before the stages refine it (cgan_ct.synthesis.placement),
as real archives differ in both. --noplacement:
every volume on the cascade's one grid, the body where the coarse generator drew it.
A synthetic_<i> folder of other settings (or with other files in it) is an
error naming it, before anything is drawn.
"""

from __future__ import annotations

from absl import app, flags

from cgan_ct.cli import job
from cgan_ct.constants import VOLUME_FORMATS

_MODEL = flags.DEFINE_string(
    "model_dir", None, "The cascade folder (cgan-ct-train-cascade OUT/cascade), or pretrained:synthesis."
)
flags.DEFINE_alias("model", "model_dir")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for the synthetic volumes.")
_COUNT = flags.DEFINE_integer("count", 1, "Number of volumes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first volume (volume i uses seed + i).")
_SLICES = flags.DEFINE_integer("slices", None, "Slices per volume (default: the training volumes' median).")
_FORMAT = flags.DEFINE_list("format", list(VOLUME_FORMATS), "Output formats: nifti, dicom.")
_OVERLAP = flags.DEFINE_float("overlap", 0.25, "Fraction of a block shared by neighbouring tiles.")
_BATCH = job.define_batch()
_GRAIN = flags.DEFINE_boolean(
    "grain",
    True,
    "Apply the cascade's output grain (mottle smoothed out, real CT's grain added; fitted when the cascade was "
    "trained). --nograin: the volumes as the stages and the calibration make them. No effect on a cascade "
    "without one.",
)

_PLACEMENT = flags.DEFINE_boolean(
    "placement",
    True,
    "Draw each volume's field of view and body position from the training volumes' (a cascade trained with "
    "--placement). --noplacement: every volume on the cascade's one grid. No effect on a cascade without them.",
)


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.formats import parse_formats
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.synthesis.synthesis import Cascade
    from cgan_ct.synthesis.writing import write_synthetic_volumes

    formats = parse_formats(_FORMAT.value)
    count = _COUNT.value
    if count < 1:
        raise app.UsageError("--count must be >= 1")
    cascade = Cascade(_MODEL.value, grain=_GRAIN.value, placement=_PLACEMENT.value)

    def progress(i: int):
        bar = ProgressBar(0, f"volume {i + 1}/{count}")

        def report(stage: int, done: int, total: int) -> None:
            bar.label = f"volume {i + 1}/{count} stage {stage + 1}/{cascade.levels}"
            bar.total = total
            bar.update(done)

        return report

    write_synthetic_volumes(
        cascade,
        _OUTPUT.value,
        count,
        _SEED.value,
        _SLICES.value,
        formats,
        _OVERLAP.value,
        _BATCH.value,
        progress=progress,
        on_volume=lambda folder, seconds: print(f"wrote {folder} ({seconds:.1f} s)"),
        on_kept=lambda folder: print(f"kept {folder} (complete, from an earlier run with the same settings)"),
    )


def run() -> None:
    job.run(main, __name__, required=("model_dir", "output_dir"))


if __name__ == "__main__":
    run()
