"""cgan-ct-synthesis-report: synthetic volumes against the real ones, without human raters.

  cgan-ct-synthesis-report --synthetic SYN_DIR --input PATH [PATH ...] --dataset_dir DATASET
                           --output_dir REPORT [--block 32] [--size 512]
                           [--model_dir CASCADE | --levels 3] [--norealism] [--noanatomy]
                           [--control_seed 0]

SYN_DIR: the output of cgan-ct-synthesize. PATH: the inputs the cascade was
trained on, and held-out ones; DATASET: its level-0 dataset (cgan-ct-train-cascade
OUT/datasets/level0), whose manifest says which inputs were training and which held
out. An input the dataset does not hold at all (a cascade trained with
--test_fraction 0 on a cohort's training series, compared with its held-out
series) was never trained on: it counts as held out. Real
volumes are centre-cropped or padded to --size in-plane, as for training.
REPORT receives report.md (the goals; one realism table: FRD, MS-SSIM
diversity, tissue HU and fractions, soft-tissue NPS; the anatomy checks:
lungs, bone, ribs, airway and heart side against the real range; HU histogram and
spectrum statistics against training, for synthetic, held-out and
leave-one-out training volumes; the memorization check at every shift at full
resolution and at the coarse level, each with a positive control; figures),
summary.json, statistics.csv, memorization.json, realism.json and anatomy.json. The coarse
level is the cascade's (--model_dir, its cascade.json) or --levels. Volumes that
cgan-ct-synthesize placed on the training volumes' fields of view (its
synthesis.json says so) need --model_dir: the memorization check searches the same
draws again on the cascade's own grid, where a copy of training voxels would lie
voxel for voxel (resampled, it escapes the check).
Exit status 3 when blocks are flagged as memorized, 4 when a positive control
was not flagged (the check is blind: its "none flagged" proves nothing).
"""

from __future__ import annotations

import pathlib

from absl import flags

from cgan_ct.cli import job
from cgan_ct.errors import InputError

_SYNTHETIC = flags.DEFINE_string("synthetic", None, "Output folder of cgan-ct-synthesize.")
_INPUT = flags.DEFINE_list(
    "input", None, "Real volumes: the cascade's training inputs and held-out ones (DICOM folders, files, roots)."
)
_DATASET = flags.DEFINE_string("dataset_dir", None, "The cascade's level-0 dataset (for the patient split).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for the report.")
_BLOCK = flags.DEFINE_integer("block", 32, "Block edge of the memorization check.")
_SIZE = flags.DEFINE_integer("size", 512, "In-plane size the real volumes are cropped or padded to.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The cascade folder (its levels set the coarse check's level).")
_LEVELS = flags.DEFINE_integer("levels", 3, "The cascade's levels, when --model_dir is not given.")
_REALISM = flags.DEFINE_boolean("realism", True, "FRD, MS-SSIM and tissue sanity (needs the realism extra).")
_ANATOMY = flags.DEFINE_boolean(
    "anatomy", True, "Anatomy checks: lungs, ribs, airway, heart side against the real range."
)
_CONTROL_SEED = flags.DEFINE_integer("control_seed", 0, "Chooses the training volume the positive control copies.")


def _synthetic_volumes(folder: pathlib.Path) -> list:
    from cgan_ct import read_volume

    volumes = []
    for sub in sorted(folder.glob("synthetic_*")):
        path = sub / "volume.nii.gz" if (sub / "volume.nii.gz").exists() else sub / "dicom"
        volumes.append(read_volume(path))
    if not volumes:
        raise InputError(folder, "holds no synthetic_* volumes (run cgan-ct-synthesize first)")
    return volumes


def _unplaced(folder: pathlib.Path, say) -> list | None:
    """Where cgan-ct-synthesize placed the volumes of ``folder`` on training fields of view (its synthesis.json):
    the same draws again on the cascade's own grid (--model_dir), for the memorization checks; else None."""
    import json

    from cgan_ct.synthesis.synthesis import Cascade
    from cgan_ct.synthesis.writing import RECORD_FILE

    path = folder / RECORD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    if not record.get("placement"):
        return None
    if not _MODEL_DIR.value:
        raise InputError(
            path,
            "says its volumes were placed on the training volumes' fields of view: give --model_dir, the cascade "
            "that drew them, so that the memorization check searches the same draws on its own grid",
        )
    cascade = Cascade(_MODEL_DIR.value, grain=record["grain"], placement=False)
    if cascade.info.cascade_id != record["cascade_id"]:
        raise InputError(_MODEL_DIR.value, f"is not the cascade that drew {folder} (another cascade id)")
    seeds = {entry["folder"]: entry["seed"] for entry in record["volumes"]}
    names = [sub.name for sub in sorted(folder.glob("synthetic_*"))]
    missing = [name for name in names if name not in seeds]
    if missing:
        raise InputError(path, f"lists no seed for {', '.join(missing)}")
    say(f"memorization: drawing the {len(names)} volumes again on the cascade's own grid (they were placed)")
    return [cascade.synthesize(seeds[name], record["slices"]).hu for name in names]


def main(argv: list[str]) -> int:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.data.manifest import load_manifest
    from cgan_ct.io.sources import discover
    from cgan_ct.realism.synthesis_report import split_real, synthesis_report
    from cgan_ct.synthesis.cascade_spec import CascadeSpec
    from cgan_ct.synthesis.cascade_training import fit_plane

    synthetic = _synthetic_volumes(pathlib.Path(_SYNTHETIC.value))
    unplaced = _unplaced(pathlib.Path(_SYNTHETIC.value), say=lambda m: print(m, flush=True))
    split = {v.volume_id: v.split for v in load_manifest(pathlib.Path(_DATASET.value)).volumes}
    sources, _ = discover(_INPUT.value)
    real = []
    for source in sources:
        volume = source.read(None)
        real.append(volume.replace(hu=fit_plane(volume.hu, _SIZE.value)))
    training, heldout, outside = split_real(real, split)
    if not training:
        raise InputError(_DATASET.value, "none of --input is a training volume of this dataset")
    if not heldout:
        raise InputError(_DATASET.value, "needs a held-out volume among --input (all are training volumes)")
    print(
        f"{len(synthetic)} synthetic, {len(training)} training, {len(heldout)} held-out volume(s) "
        f"({outside} of them not in the dataset)"
    )
    levels = CascadeSpec.load(_MODEL_DIR.value).levels if _MODEL_DIR.value else _LEVELS.value
    summary = synthesis_report(
        synthetic,
        training,
        heldout,
        _OUTPUT.value,
        _BLOCK.value,
        levels=levels,
        realism=_REALISM.value,
        anatomy=_ANATOMY.value,
        control_seed=_CONTROL_SEED.value,
        say=lambda m: print(m, flush=True),
        memorization_synthetic=unplaced,
    )
    print(f"report: {summary['report']}")
    for name, passed in summary["goals"].items():
        print(f"goal {'met' if passed else 'missed'}: {name} ({summary['goal_figures'][name]})")
    print(
        f"memorization: {summary['flagged_blocks']} of {summary['synthetic_blocks']} + "
        f"{summary['coarse_synthetic_blocks']} (coarse) synthetic blocks flagged"
    )
    if not summary["control_detected"]:
        print("memorization: a positive control was NOT flagged: the check is blind")
        return 4
    return 3 if summary["flagged_blocks"] else 0


def run() -> None:
    job.run(main, __name__, required=("synthetic", "input", "dataset_dir", "output_dir"), patients=True)


if __name__ == "__main__":
    run()
