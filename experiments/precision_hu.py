"""Inference in a 16-bit precision against float32, in HU, on real scans: does it meet the goal?

  python experiments/precision_hu.py [--models denoise,depixelate,lowdose,denoise-peak128]
      [--scans lidc-idri-0001,covid-ct-md-normal001] [--slices 64] [--crop 320] [--precision bfloat16]
      [--ct_dir ../shared/data/ct] [--output FILE]

For each shipped model (or any model folder) and each real scan (a slab of ``--slices`` slices at the
scan's middle, ``--crop`` voxels square at the centre of the plane, to keep the 16-bit run short on CPUs
that emulate it), runs cgan-ct-infer's path (the condition simulated with the same seed, the same tiles)
once in float32 and once in ``--precision``, and compares the two int16 results inside the body
(cgan_ct.ops.body_mask): mean, 99th percentile and largest |difference| in HU, and the PSNR of each
against the scan itself (the model's own error, for scale). Issue 29's goal: mean <= 0.5 HU and
max <= 5 HU; cgan_ct.model.precision.INFERENCE_BFLOAT16_MEETS_GOAL records the verdict ``auto`` follows.
Wall seconds are printed but are not the figure: on CPUs without bfloat16 matrix units TensorFlow
emulates bfloat16 slowly (benchmarks/model_bench.py measures speed).
"""

from __future__ import annotations

import pathlib
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py: the JSON-lines record
import numpy as np
from absl import app, flags

from cgan_ct import runtime

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_MODELS = flags.DEFINE_list(
    "models", ["denoise", "depixelate", "lowdose", "denoise-peak128"], "Models: shipped names or folders."
)
_SCANS = flags.DEFINE_list(
    "scans", cohort.heldout_series(), "Real series (folders under --ct_dir; default: the held-out ones)."
)
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_SLICES = flags.DEFINE_integer("slices", 64, "Slices of each scan (its middle); 0: all.")
_CROP = flags.DEFINE_integer("crop", 320, "In-plane square at the centre, voxels; 0: the whole plane.")
_PRECISION = flags.DEFINE_enum("precision", "bfloat16", ["bfloat16", "float16"], "The precision compared with float32.")
_OUTPUT = flags.DEFINE_string("output", None, "Append the rows as JSON lines to this file.")
GOAL_MEAN_HU, GOAL_MAX_HU = 0.5, 5.0


def slab(hu: np.ndarray, slices: int, crop: int) -> np.ndarray:
    """The middle ``slices`` slices of ``hu`` [Z, Y, X], cropped to ``crop`` x ``crop`` at the plane's centre."""
    z, y, x = hu.shape
    if slices and slices < z:
        hu = hu[(z - slices) // 2 : (z - slices) // 2 + slices]
    if crop and crop < min(y, x):
        hu = hu[:, (y - crop) // 2 : (y - crop) // 2 + crop, (x - crop) // 2 : (x - crop) // 2 + crop]
    return np.ascontiguousarray(hu)


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask]) ** 2))
    return 10 * np.log10(4095.0**2 / mse) if mse else float("inf")


def compare(model_spec: str, scan: pathlib.Path, precision: str) -> dict:
    from cgan_ct.inference.inference import BlockModel, infer_volume
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.ops.body_mask import body_mask

    full = read_volume(scan)
    volume = full.replace(hu=slab(full.hu, _SLICES.value, _CROP.value))
    inside = body_mask(volume.hu)
    spec = model_spec if "/" in model_spec else f"pretrained:{model_spec}"
    out, seconds = {}, {}
    for name in ("float32", precision):
        model = BlockModel(spec, precision=name)
        start = time.monotonic()
        _, generated = infer_volume(volume, model, seed=0)
        seconds[name] = time.monotonic() - start
        out[name] = generated.hu.astype(np.int32)
    diff = np.abs(out[precision] - out["float32"])[inside]
    return {
        "model": model_spec,
        "scan": scan.name,
        "precision": precision,
        "shape": list(volume.hu.shape),
        "body_voxels": int(inside.sum()),
        "mean_abs_hu": float(diff.mean()),
        "p99_abs_hu": float(np.percentile(diff, 99)),
        "max_abs_hu": int(diff.max()),
        "psnr_float32_db": _psnr(out["float32"], volume.hu, inside),
        f"psnr_{precision}_db": _psnr(out[precision], volume.hu, inside),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.model.precision import matrix_features

    status = runtime.status()
    print(f"cpu: {status['cpu']} ({matrix_features()}); oneDNN {status['onednn']}")
    print(
        f"slab: {_SLICES.value or 'all'} slices, {_CROP.value or 'full'} in-plane; "
        f"goal mean <= {GOAL_MEAN_HU} HU, max <= {GOAL_MAX_HU} HU"
    )
    p = _PRECISION.value
    print(f"| model | scan | mean |d| HU | p99 |d| | max |d| | PSNR float32 | PSNR {p} | s float32 / {p} |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for model in _MODELS.value:
        for scan in _SCANS.value:
            r = compare(model, pathlib.Path(_CT.value) / scan, p)
            rows.append(r)
            print(
                f"| {model} | {scan} | {r['mean_abs_hu']:.3f} | {r['p99_abs_hu']:.0f} | {r['max_abs_hu']} "
                f"| {r['psnr_float32_db']:.2f} | {r[f'psnr_{p}_db']:.2f} "
                f"| {r['seconds']['float32']} / {r['seconds'][p]} |",
                flush=True,
            )
    met = all(r["mean_abs_hu"] <= GOAL_MEAN_HU and r["max_abs_hu"] <= GOAL_MAX_HU for r in rows)
    print(
        f"goal {'met' if met else 'missed'}: worst mean {max(r['mean_abs_hu'] for r in rows):.3f} HU, "
        f"worst max {max(r['max_abs_hu'] for r in rows)} HU"
    )
    heldout.append_jsonl(_OUTPUT.value, rows)


if __name__ == "__main__":
    app.run(main)
