"""cgan-ct-reader-study: a blinded real-or-generated reader study as a static web page.

  cgan-ct-reader-study --real PATH --generated PATH --output_dir DIR
                       [--pairs 20] [--window lung|mediastinum|both] [--seed S] [--size_px 512]

PATH is a volume (file or DICOM folder) or a folder of volumes, paired by
sorted order. Writes DIR/study/ (index.html and img/: give this folder to the
readers; it opens from a file, no server or network) and DIR/key.json (which
side is real, the slice positions and pseudonymous volume ids, never input
paths or names: keep it away from the readers). --seed chooses the slices, so
two generators can be shown on the same slices; sides, order and image names
are drawn afresh from the operating system every time. Score the downloaded
answers with cgan-ct-reader-study-score. Errors print one line and exit with
status 2.
"""

from __future__ import annotations

from absl import flags

from cgan_ct.cli import job

_REAL = flags.DEFINE_string("real", None, "Real CT: a volume file, DICOM folder, or folder of volumes.")
_GENERATED = flags.DEFINE_string("generated", None, "Generated CT, as --real; paired with it by sorted order.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Writes OUTPUT_DIR/study/ (for readers) and OUTPUT_DIR/key.json.")
_PAIRS = flags.DEFINE_integer("pairs", 20, "Slice pairs to show (with --window both, each in both windows).")
_WINDOW = flags.DEFINE_enum("window", "lung", ["lung", "mediastinum", "both"], "Display window(s).")
_SEED = flags.DEFINE_integer("seed", 0, "Chooses the slices (sides, order and names are always freshly random).")
_SIZE = flags.DEFINE_integer("size_px", 512, "Displayed image size in pixels (square).")


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.study.reader_study import build_study

    bars = {}

    def progress(done: int, total: int) -> None:
        bars.setdefault("read", ProgressBar(total, "volume pairs read")).update(done)

    study = build_study(
        _REAL.value,
        _GENERATED.value,
        _OUTPUT.value,
        pairs=_PAIRS.value,
        window=_WINDOW.value,
        seed=_SEED.value,
        size_px=_SIZE.value,
        progress=progress,
    )
    print(f"study: {study.page} ({study.trials} trials; give the folder {study.page.parent} to the readers)")
    print(f"key:   {study.key} (keep it away from the readers)")


def run() -> None:
    job.run(main, __name__, required=("real", "generated", "output_dir"), patients=True)


if __name__ == "__main__":
    run()
