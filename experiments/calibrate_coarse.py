"""Calibrate the coarse generator of an already trained cascade (issue 33: tissue medians).

  python experiments/calibrate_coarse.py --cascade CASCADE --coarse_keras RUN/runs/coarse.keras \
      --input SERIES,... [--samples 16]

``cgan-ct-train-cascade --coarse_calibration`` calibrates while it trains; this gives a cascade trained
without it the same calibration, to measure what it changes with everything else held: CASCADE/coarse is
saved again from ``--coarse_keras`` (the generator its training run kept) with the calibration fitted to the
``--input`` series (the cascade's training series) taken to its coarse level as the trainer takes them
(centre-cropped to its plane, its pyramid), and cascade.json records it. Work on a copy: CASCADE is changed
in place. Its stages stay as trained (their conditions degraded as the uncalibrated draws were).

Before it writes, it checks that ``--coarse_keras`` is the generator CASCADE/coarse serves (their draws agree
within 0.5 HU) and that CASCADE/coarse is not calibrated already.
"""

from __future__ import annotations

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import dataclasses

import numpy as np
from absl import app, flags

_CASCADE = flags.DEFINE_string("cascade", None, "The cascade folder to calibrate (changed in place).", required=True)
_KERAS = flags.DEFINE_string("coarse_keras", None, "The coarse generator's .keras file (RUN/runs).", required=True)
_INPUT = flags.DEFINE_list("input", None, "The cascade's training series (folders or volume files).", required=True)
_SAMPLES = flags.DEFINE_integer("samples", 16, "Draws the calibration is fitted to.", lower_bound=1)
AGREE_HU = 0.5


def main(argv: list[str]) -> None:
    del argv
    import pathlib

    import keras

    from cgan_ct.config import CoarseConfig
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.ops.intensity import IntensityMapping
    from cgan_ct.ops.pyramid import downsample
    from cgan_ct.synthesis.cascade_spec import CascadeSpec
    from cgan_ct.synthesis.cascade_training import (
        calibrate_coarse,
        calibration_line,
        coarse_calibration_record,
        fit_plane,
    )
    from cgan_ct.synthesis.coarse_export import CoarseModel, CoarseModule, save_coarse_model

    folder = pathlib.Path(_CASCADE.value)
    spec = CascadeSpec.load(folder)
    served = CoarseModel(folder / spec.coarse)
    if served.calibration is not None:
        raise SystemExit(f"{folder / spec.coarse}: already calibrated")
    fields = {f.name for f in dataclasses.fields(CoarseConfig)}
    config = CoarseConfig(**{k: v for k, v in spec.training["coarse_model"].items() if k in fields})
    config = dataclasses.replace(config, size=served.size)
    mapping = IntensityMapping.from_json(served.info["intensity"])
    module = CoarseModule(keras.models.load_model(_KERAS.value), mapping, config)
    gap = float(np.abs(module.draw(0, 4) - served.draw(0, 4)).max())
    if gap > AGREE_HU:
        raise SystemExit(
            f"{_KERAS.value} is not the generator {folder / spec.coarse} serves (draws {gap:.1f} HU apart)"
        )
    pyramid = spec.training.get("pyramid", "subsample")
    volumes = [
        downsample(fit_plane(read_volume(path).hu, spec.size), 2**spec.levels, pyramid).astype(np.float32)
        for path in _INPUT.value
    ]
    calibration, fit = calibrate_coarse(module, volumes, _SAMPLES.value)
    info = {k: v for k, v in served.info.items() if k not in ("size", "intensity", "signatures", "calibration")}
    save_coarse_model(module.generator, mapping, config, folder / spec.coarse, info, calibration)
    training = {**spec.training, "coarse_calibration": coarse_calibration_record(folder / spec.coarse)}
    dataclasses.replace(spec, training=training).save(folder)
    print(calibration_line(fit))
    print(f"knots (HU, every 32nd): {np.round(calibration.source_hu[::32])} -> {np.round(calibration.target_hu[::32])}")


if __name__ == "__main__":
    app.run(main)
