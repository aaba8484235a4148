"""cgan-ct-inspect: summarize and verify a converted dataset, and draw a montage.

  cgan-ct-inspect --dataset_dir DIR [--montage FILE.png] [--montage_blocks 36]

Verifies every shard's CRC-32C and record count against the manifest and that
every record decodes with TensorFlow to the manifest's block shape. The
montage shows the central axial slice of random blocks in a lung window
(-1350..150 HU), the block's margin dimmed. Exit status 0 only when
everything verifies.
"""

from __future__ import annotations

import sys

from absl import flags

from cgan_ct.cli import job

_DATASET = flags.DEFINE_string("dataset_dir", None, "A folder written by cgan-ct-convert.")
_MONTAGE = flags.DEFINE_string("montage", None, "Write a PNG montage of random blocks here.")
_BLOCKS = flags.DEFINE_integer("montage_blocks", 36, "Blocks in the montage.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for choosing the montage blocks.")


def main(argv: list[str]) -> int:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.data.dataset_check import montage_png, summarize, verify

    print(summarize(_DATASET.value))
    problems = verify(_DATASET.value)
    if _MONTAGE.value:
        print(f"montage: {montage_png(_DATASET.value, _MONTAGE.value, _BLOCKS.value, _SEED.value)}")
    for problem in problems:
        print(f"cgan-ct-inspect: FAILED {problem}", file=sys.stderr)
    if problems:
        return 1
    print("verified: every shard checksum, record count and record decodes")
    return 0


def run() -> None:
    job.run(main, __name__, required=("dataset_dir",))


if __name__ == "__main__":
    run()
