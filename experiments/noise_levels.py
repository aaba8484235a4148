"""Can a scan's own noise level tell a lowdose model how much noise to remove? (issue 31, item 3)

  python experiments/noise_levels.py [--series A,B] [--slices 8] [--doses 1,0.9,0.5,0.25]
      [--ct_dir ../shared/data/ct]

For each series (default: every series of cohort.json, training and held out), its central ``--slices``
slices at each simulated dose (cgan_ct.ops.lowdose, seed 0; dose 1 is the scan as it is), and their
soft-tissue noise as the project's estimator measures it (cgan_ct.ops.noise_level: the mode of the local
standard deviation, in HU). The last line answers whether a gate on that estimate could work: it could
only if every training series at the lowest dose trained on (--served) is noisier than every held-out
series at the mildest dose (--mild).
"""

from __future__ import annotations

import json
import pathlib

import cohort  # experiments/cohort.py, beside this script
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_SERIES = flags.DEFINE_list("series", None, "Series (folders); default: cohort.json's training and held-out ones.")
_SLICES = flags.DEFINE_integer("slices", 8, "Central slices of each series.")
_DOSES = flags.DEFINE_list("doses", ["1", "0.9", "0.5", "0.25"], "Simulated doses (1: the scan as it is).")
_SERVED = flags.DEFINE_float("served", 0.25, "The dose the model trained on (its noisiest condition).")
_MILD = flags.DEFINE_float("mild", 0.9, "The mildest dose a user may give it.")


def main(argv: list[str]) -> None:
    del argv
    import numpy as np

    from cgan_ct.config import LowDoseConfig
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.ops.lowdose import simulate_lowdose
    from cgan_ct.ops.noise_level import TISSUE_HU, global_noise_hu, noise_regions

    doses = [float(d) for d in _DOSES.value]
    train, heldout = set(cohort.train_series()), set(cohort.heldout_series())
    names = _SERIES.value or sorted(train) + sorted(heldout)
    print(f"{'series':28s} {'role':8s} {'slice':>8s} " + " ".join(f"{'dose ' + str(d):>10s}" for d in doses))
    rows = []
    for name in names:
        volume = cohort.central_slices(read_volume(pathlib.Path(_CT.value) / name), _SLICES.value)
        slab = volume.hu.astype(np.float32)
        region = noise_regions(slab)[0]
        noise = {}
        for dose in doses:
            scan = slab if dose == 1.0 else simulate_lowdose(slab, volume.spacing_mm, LowDoseConfig(dose=dose), name)
            noise[dose] = global_noise_hu(scan, volume.spacing_mm, region, TISSUE_HU)
        role = "train" if name in train else "heldout" if name in heldout else "other"
        rows.append({"series": name, "role": role, "noise_hu": noise})
        figures = " ".join(f"{noise[d]:7.1f} HU" for d in doses)
        print(f"{name:28s} {role:8s} {volume.spacing_mm[0]:5.2f} mm {figures}", flush=True)
    served = [r["noise_hu"].get(_SERVED.value) for r in rows if r["role"] == "train"]
    mild = [r["noise_hu"].get(_MILD.value) for r in rows if r["role"] == "heldout"]
    if None in served + mild or not served or not mild:
        print(f"gate: not judged (needs training and held-out series at doses {_SERVED.value} and {_MILD.value})")
        return
    quietest_served, noisiest_mild = float(np.nanmin(served)), float(np.nanmax(mild))
    verdict = "separable" if quietest_served > noisiest_mild else "not separable"
    print(json.dumps({"rows": rows}, default=float))
    print(
        f"gate: quietest training series at dose {_SERVED.value} {quietest_served:.1f} HU, noisiest held-out at "
        f"dose {_MILD.value} {noisiest_mild:.1f} HU: {verdict} by the scan's noise level"
    )


if __name__ == "__main__":
    app.run(main)
