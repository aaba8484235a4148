"""What reading an elastically deformed block does to its texture, on held-out real CT (issue 33, item 1).

  python experiments/elastic_sampling.py [--levels 0,2] [--elastic_voxels 3] [--heldout SERIES,...] \
      [--slices 32] [--ct_dir ../shared/data/ct] [--output rows.jsonl]

No training: each held-out series, taken to each level as a cascade stage sees it (heldout.level_slabs), is
displaced by one smooth random field (the training pipeline's, spread over the volume: deform_volume) and
read by each of augment's samplings; ``nearest`` (each position read from its nearest voxel: nothing
averaged, edges stepped) is the displacement alone, for reference. Against the undisplaced volume: the
soft-tissue noise power (standard deviation and mean frequency, ratios: 1 = the real scan's) in the real
volume's own uniform soft-tissue patches, and edge sharpness: the mean in-plane gradient of each volume's
own strongest 2 % inside the body over the real's (the real's edge voxels would not do: the edges have
moved). A sampler that smooths the noise teaches a stage that real CT is smoother than it is.
"""

from __future__ import annotations

import pathlib
import types

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py
import numpy as np
from absl import app, flags

from cgan_ct import runtime

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_LEVELS = flags.DEFINE_list("levels", ["0", "2"], "Pyramid levels (0: full resolution; L: every 2^L-th voxel).")
_ELASTIC = flags.DEFINE_float("elastic_voxels", 3.0, "The elastic field's amplitude (voxels per axis).")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_SLICES = flags.DEFINE_integer("slices", 32, "Central slices of each level volume (all where fewer).")
_SIZE = flags.DEFINE_integer("size", 512, "The in-plane size the series is fitted to first (a cascade's).")
_OUTPUT = flags.DEFINE_string("output", None, "Append the rows here as JSON lines.")

BLOCK = 32


def deform_volume(hu: np.ndarray, amplitude: float, seed: int) -> dict[str, np.ndarray]:
    """Per sampling: ``hu`` (z, y, x) displaced by one smooth random field and read by that sampling.

    The field is the training pipeline's (augment.elastic_field: raised-cosine blends of uniform control
    displacements of at most ``amplitude`` voxels, one control every (BLOCK - 1) / (ELASTIC_GRID - 1) voxels)
    spread over the whole volume, so that no block seam breaks the texture; the volume is mirrored at its
    faces where a displaced position reaches past them.
    """
    import math

    import tensorflow as tf

    from cgan_ct.constants import ELASTIC_SAMPLINGS
    from cgan_ct.data import augment

    spacing = (BLOCK - 1) / (augment.ELASTIC_GRID - 1)
    controls = [max(2, round((n - 1) / spacing) + 1) for n in hu.shape]
    rng = np.random.default_rng(seed)
    control = rng.uniform(-amplitude, amplitude, [*controls, 3]).astype(np.float32)
    weights = [augment.cosine_weights(n, g) for n, g in zip(hu.shape, controls, strict=True)]
    field = np.einsum("zi,yj,xk,ijkc->zyxc", *weights, control, optimize=True)  # one axis at a time
    margin = math.ceil(amplitude)
    stored = tf.constant(np.pad(hu.astype(np.float32), margin, mode="symmetric"))
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) + margin for n in hu.shape], indexing="ij"), -1)
    coords = tf.constant(grid + field)
    samplers = {name: lambda s, c, n=name: augment.sample(s, c, n) for name in ELASTIC_SAMPLINGS}
    samplers["nearest"] = augment.sample_nearest  # the displacement alone: no sample averaged (a reference)
    return {name: sampler(stored, coords).numpy() for name, sampler in samplers.items()}


def own_edges(volume: np.ndarray, spacing_mm) -> float:
    """The mean in-plane gradient (HU/mm) of ``volume``'s own strongest edges inside its body."""
    from cgan_ct.realism.texture import edge_voxels, gradient_magnitude

    magnitude = gradient_magnitude(volume, spacing_mm)
    return float(magnitude[edge_voxels(volume, spacing_mm, magnitude=magnitude)].mean())


def measure(slab, level: int, amplitude: float, seed: int = 0) -> list[dict]:
    """Rows of one level slab: each sampling's texture ratios against the undeformed slab."""
    from cgan_ct.realism.texture import texture_against

    real = np.asarray(slab.hu, np.float32)
    outputs = deform_volume(real, amplitude, seed)
    patch = max(8, heldout.STAGE_PATCH // 2**level)
    measured = texture_against(real, outputs, slab.spacing_mm, patch=patch)
    real_edges = own_edges(real, slab.spacing_mm)
    rows = []
    for name, output in outputs.items():
        rows.append(
            {
                "level": level,
                "sampling": name,
                "elastic_voxels": amplitude,
                "shape": list(real.shape),
                "nps_noise_ratio": measured[name]["nps_noise_ratio"],
                "nps_frequency_ratio": measured[name]["nps_frequency_ratio"],
                "own_edge_ratio": own_edges(output, slab.spacing_mm) / real_edges,
                "real": measured["real"],
            }
        )
    return rows


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.io.volume_reader import read_volume

    plane = types.SimpleNamespace(size=_SIZE.value)  # all heldout.level_slabs reads of a cascade
    print(f"cpu: {runtime.status()['cpu']}; elastic {_ELASTIC.value} voxels")
    rows = []
    for name in _HELDOUT.value:
        volume = read_volume(pathlib.Path(_CT.value) / name)
        for level in (int(v) for v in _LEVELS.value):
            (slab,) = heldout.level_slabs(plane, level, [volume], _SLICES.value)
            for row in measure(slab, level, _ELASTIC.value):
                rows.append({"series": name, **row})
                print(
                    f"{name} level {level} {row['sampling']:>16}: noise {_fmt(row['nps_noise_ratio'])}, "
                    f"frequency {_fmt(row['nps_frequency_ratio'])}, own edges {row['own_edge_ratio']:.3f}",
                    flush=True,
                )
    print("\nmeans over series (1 = the undeformed real scan):")
    for level in sorted({r["level"] for r in rows}):
        for sampling in sorted({r["sampling"] for r in rows}):
            got = [r for r in rows if r["level"] == level and r["sampling"] == sampling]
            noise, frequency, edges = (
                _fmt(_mean([r[k] for r in got])) for k in ("nps_noise_ratio", "nps_frequency_ratio", "own_edge_ratio")
            )
            print(f"level {level} {sampling:>16}: noise {noise}, frequency {frequency}, edges {edges}")
    heldout.append_jsonl(_OUTPUT.value, rows)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    app.run(main)
