"""Texture of each x2 stage of a cascade at its own level, on held-out real CT (issue 33, item 3).

  python experiments/stage_texture.py --cascade pretrained:synthesis [--heldout SERIES,...] [--slices 32]
      [--ct_dir ../shared/data/ct] [--output rows.jsonl]

Stage j refines level j+1 to level j (every 2^j-th voxel). For each held-out series: the real volume taken to
the cascade's plane (as training did) and to level j, its central ``--slices`` slices (all where fewer); the
stage's output on its own 2x pixelation (the depixelate condition), scored as every model here is (PSNR
against the real level) and by texture (cgan_ct.realism.texture: soft-tissue noise power and edge sharpness
as ratios to the real level; 1 is real; the noise power in patches of about the same size in mm at every
level), beside the condition's. This is the paired measurement: what a stage
adds to real coarser input, against the real finer level. Prints one table per stage.
"""

from __future__ import annotations

import pathlib

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py: a stage scored at its level, the texture table
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CASCADE = flags.DEFINE_string("cascade", "pretrained:synthesis", "The cascade (a folder or pretrained:NAME).")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_SLICES = flags.DEFINE_integer("slices", 32, "Central slices of each level volume (all where fewer).")
_OUTPUT = flags.DEFINE_string("output", None, "Append the rows here as JSON lines.")


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.synthesis.cascade_spec import CascadeSpec, cascade_folder

    folder = cascade_folder(_CASCADE.value)
    spec = CascadeSpec.load(folder)
    real = [read_volume(pathlib.Path(_CT.value) / name) for name in _HELDOUT.value]
    rows = []
    for i, name in enumerate(spec.stages):  # coarsest first: stage i refines level levels - i to levels - 1 - i
        level = spec.levels - 1 - i
        slabs = heldout.level_slabs(spec, level, real, _SLICES.value)
        rows += [{**row, "stage": name} for row in heldout.score_stage(BlockModel(folder / name), level, slabs)]
        chosen = [r for r in rows if r["stage"] == name]
        print(f"\n{name} (level {level + 1} -> {level}, {len(real)} held-out series):", flush=True)
        print(heldout.texture_table(chosen))
    heldout.append_jsonl(_OUTPUT.value, rows)


if __name__ == "__main__":
    app.run(main)
