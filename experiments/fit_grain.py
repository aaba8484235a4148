"""Give an already trained cascade the output grain (issue 33, item 3: texture; BUILD_NOTES "Output grain").

  python experiments/fit_grain.py --cascade CASCADE --input SERIES,... [--samples 4]

``cgan-ct-train-cascade`` fits the grain when it trains (``--output_grain``, on by default); this gives a
cascade trained before it the same fit, to measure what the grain changes with everything else held: whole
volumes of the cascade's default depth are drawn (through its output calibration) and their soft-tissue
noise power matched to the ``--input`` series' (the cascade's training series). cascade.json gets the grain
(``output_grain``), which cgan-ct-synthesize applies; the fit's record goes to
CASCADE/../runs/output_grain.json. Work on a copy: CASCADE is changed in place. A cascade that has a grain
already is refused.
"""

from __future__ import annotations

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

from absl import app, flags

_CASCADE = flags.DEFINE_string("cascade", None, "The cascade folder (changed in place).", required=True)
_INPUT = flags.DEFINE_list("input", None, "The cascade's training series (folders or volume files).", required=True)
_SAMPLES = flags.DEFINE_integer("samples", 4, "Whole volumes the grain is fitted to.", lower_bound=1)


def main(argv: list[str]) -> None:
    del argv
    import pathlib

    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.synthesis.cascade_training import fit_output_grain
    from cgan_ct.synthesis.grain import soft_tissue_nps
    from cgan_ct.synthesis.synthesis import Cascade

    folder = pathlib.Path(_CASCADE.value)
    cascade = Cascade(folder, placement=False)  # fitted on the cascade's own grid, as the trainer fits it
    if cascade.grain is not None:
        raise SystemExit(f"{folder}: it has an output grain already")
    real = []
    for path in _INPUT.value:
        volume = read_volume(path)
        real.append(soft_tissue_nps(volume.hu, volume.spacing_mm))
    runs = folder.resolve().parent / "runs"
    runs.mkdir(exist_ok=True)
    spec = fit_output_grain(cascade, real, _SAMPLES.value, runs, print)
    if spec.output_grain is None:
        raise SystemExit(f"{folder}: no grain fitted")
    spec.save(folder)


if __name__ == "__main__":
    app.run(main)
