"""Tunes the denoising baselines (Gaussian, NLM, BM3D) once per condition on training patients.

  python experiments/tune_baselines.py --task denoise --peak 512 [--slices 2]
  python experiments/tune_baselines.py --task lowdose --dose 0.25 [--slices 2]
      [--train SERIES,...] [--ct_dir ../shared/data/ct]

The condition is simulated (seed 0) on the central ``--slices`` slices of each training series (the
same patients the shipped models trained on; the held-out ones are never read), and each method's
setting is the grid value with the best mean PSNR in HU (cgan_ct.inference.baselines.tune_baselines).
Prints the JSON that ``baselines.TUNED`` records for that condition.
"""

from __future__ import annotations

import json
import pathlib
import time

import cohort  # experiments/cohort.py, beside this script
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_TASK = flags.DEFINE_enum("task", "lowdose", ["denoise", "lowdose"], "The condition's task.")
_PEAK = flags.DEFINE_float("peak", 512.0, "denoise: the Poisson peak.")
_DOSE = flags.DEFINE_float("dose", 0.25, "lowdose: the simulated dose.")
_SLICES = flags.DEFINE_integer("slices", 2, "Central slices of each training series.")
_METHODS = flags.DEFINE_list("methods", ["gaussian", "non_local_means", "bm3d"], "Methods to tune.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list("train", cohort.train_series(), "Training series (folders; default: cohort.json).")


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct import runtime
    from cgan_ct.config import LowDoseConfig
    from cgan_ct.inference.baselines import tune_baselines
    from cgan_ct.inference.inference import condition_volume
    from cgan_ct.io.volume_reader import read_volume

    lowdose = LowDoseConfig(dose=_DOSE.value)
    pairs = []
    for name in _TRAIN.value:
        volume = read_volume(pathlib.Path(_CT.value) / name)
        start = max(0, (volume.shape[0] - _SLICES.value) // 2)
        volume = volume.replace(hu=volume.hu[start : start + _SLICES.value].copy())
        condition = condition_volume(volume, _TASK.value, 0, peak=_PEAK.value, lowdose=lowdose)
        pairs.append((condition.hu.astype("float32"), volume.hu))
    began = time.monotonic()
    tuned = tune_baselines(_TASK.value, pairs, methods=tuple(_METHODS.value), peak=_PEAK.value)
    key = f"peak {_PEAK.value:g}" if _TASK.value == "denoise" else f"dose {_DOSE.value:g}"
    print(f"{_TASK.value}, {key}: tuned on {len(pairs)} x {_SLICES.value} slices in {time.monotonic() - began:.0f} s")
    print(f"cpu: {runtime.status()['cpu']}")
    print(json.dumps(tuned))


if __name__ == "__main__":
    app.run(main)
