"""Calibrate the full-resolution output of an already trained cascade (issue 33: lung HU).

  python experiments/calibrate_output.py --cascade CASCADE --input SERIES,... [--samples 8]

``cgan-ct-train-cascade --output_calibration`` calibrates when its stages are trained; this gives a cascade
trained without it the same calibration, to measure what it changes with everything else held: whole volumes
of the cascade's default depth are drawn and matched to the ``--input`` series (the cascade's training
series, centre-cropped to its plane as the trainer takes them), lung (below -400 HU), the partial range
(-400 to -190 HU), fat to soft tissue (-190 to 300 HU) and bone apart.
cascade.json gets the map (``output_calibration``), which cgan-ct-synthesize applies; the fit's record goes
to CASCADE/../runs/output_calibration.json. Work on a copy: CASCADE is changed in place. A cascade that is
calibrated already is refused.
"""

from __future__ import annotations

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

from absl import app, flags

_CASCADE = flags.DEFINE_string("cascade", None, "The cascade folder to calibrate (changed in place).", required=True)
_INPUT = flags.DEFINE_list("input", None, "The cascade's training series (folders or volume files).", required=True)
_SAMPLES = flags.DEFINE_integer("samples", 8, "Whole volumes the calibration is fitted to.", lower_bound=1)


def main(argv: list[str]) -> None:
    del argv
    import pathlib

    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.synthesis.calibration import band_quantiles
    from cgan_ct.synthesis.cascade_training import OUTPUT_SPLITS_HU, calibrate_output, fit_plane
    from cgan_ct.synthesis.synthesis import Cascade

    folder = pathlib.Path(_CASCADE.value)
    cascade = Cascade(folder, placement=False)  # fitted on the cascade's own grid, as the trainer fits it
    if cascade.calibration is not None:
        raise SystemExit(f"{folder}: its output is already calibrated")
    real = [band_quantiles(fit_plane(read_volume(path).hu, cascade.size), OUTPUT_SPLITS_HU) for path in _INPUT.value]
    runs = folder.resolve().parent / "runs"
    runs.mkdir(exist_ok=True)
    spec = calibrate_output(cascade, real, _SAMPLES.value, runs, print)
    if spec.output_calibration is None:
        raise SystemExit(f"{folder}: not calibrated")
    spec.save(folder)


if __name__ == "__main__":
    app.run(main)
