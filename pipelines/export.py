"""cgan-ct-export: a training run's generator -> SavedModel for block inference.

cgan-ct-export --run_dir RUN_DIR --output_dir MODEL_DIR [--checkpoint best|last] [--overwrite]
"""

from __future__ import annotations

import sys

from absl import app, flags

from cgan_ct.errors import VolumeError
from cgan_ct.model.export import export_generator

_RUN = flags.DEFINE_string("run_dir", None, "A folder written by cgan-ct-train.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "SavedModel folder to write.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which generator checkpoint.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing model folder.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (_RUN.value and _OUTPUT.value):
        raise app.UsageError("--run_dir and --output_dir are required")
    try:
        path = export_generator(_RUN.value, _OUTPUT.value, _CHECKPOINT.value, _OVERWRITE.value)
    except VolumeError as exc:
        print(f"cgan-ct-export: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"cgan-ct-export: SavedModel written to {path}")


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
