"""cgan-ct-export: a training run's generator -> SavedModel for block inference.

cgan-ct-export --run_dir RUN_DIR --output_dir MODEL_DIR [--checkpoint best|last] [--overwrite]
"""

from __future__ import annotations

from absl import flags

from cgan_ct.cli import job
from cgan_ct.model.export import export_generator

_RUN = flags.DEFINE_string("run_dir", None, "A folder written by cgan-ct-train.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "SavedModel folder to write.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which generator checkpoint.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing model folder.")


def main(argv: list[str]) -> None:
    path = export_generator(_RUN.value, _OUTPUT.value, _CHECKPOINT.value, _OVERWRITE.value)
    print(f"cgan-ct-export: SavedModel written to {path}")


def run() -> None:
    job.run(main, __name__, required=("run_dir", "output_dir"))


if __name__ == "__main__":
    run()
