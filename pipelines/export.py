"""cgan-ct-export: a training run's generator -> SavedModel for block inference and TF Serving.

cgan-ct-export --run_dir RUN_DIR --output_dir MODEL_DIR [--version N] [--checkpoint best|last] [--overwrite]

Writes MODEL_DIR/N/ (TF Serving's layout: it loads only integer version
folders under its --model_base_path, and serves the highest). N defaults to
the next free integer (1 for a new MODEL_DIR). cgan-ct-infer, cgan-ct-evaluate
and the demo load MODEL_DIR (its highest version) or a version folder itself.
"""

from __future__ import annotations

from absl import flags

from cgan_ct.cli import job

_RUN = flags.DEFINE_string("run_dir", None, "A folder written by cgan-ct-train.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Model base folder: the SavedModel goes to OUTPUT_DIR/VERSION/.")
_VERSION = flags.DEFINE_integer(
    "version", None, "Version folder to write (default: the next free integer).", lower_bound=1
)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which generator checkpoint.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version folder.")


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.model.export import export_version

    path, version = export_version(_RUN.value, _OUTPUT.value, _VERSION.value, _CHECKPOINT.value, _OVERWRITE.value)
    print(f"cgan-ct-export: SavedModel version {version} written to {path}")


def run() -> None:
    job.run(main, __name__, required=("run_dir", "output_dir"))


if __name__ == "__main__":
    run()
