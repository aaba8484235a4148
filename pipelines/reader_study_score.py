"""cgan-ct-reader-study-score: readers' accuracy at telling real from generated CT.

  cgan-ct-reader-study-score --key DIR/key.json --answers FILE [FILE ...] [--output table.md]

FILE is an answers file a reader downloaded from the study page (JSON or
CSV), one per reader. Prints a Markdown table: per reader and pooled, per
window and all windows, the accuracy with an exact 95% confidence interval
and an exact two-sided binomial test against 50% (guessing). Errors print one
line and exit with status 2.
"""

from __future__ import annotations

import pathlib

from absl import app, flags

from cgan_ct.cli import job

_KEY = flags.DEFINE_string("key", None, "The study's key.json.")
_ANSWERS = flags.DEFINE_multi_string("answers", None, "A reader's answers file; more may follow as arguments.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the table to this Markdown file.")


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.study.reader_score import markdown_table, read_answers, read_key, score_readers

    files = (_ANSWERS.value or []) + argv[1:]
    if not files:
        raise app.UsageError("give at least one answers file: --answers FILE [FILE ...]")
    key = read_key(_KEY.value)
    table = markdown_table(score_readers(key, [read_answers(f) for f in files]))
    print(table)
    if _OUTPUT.value:
        pathlib.Path(_OUTPUT.value).write_text(table + "\n", encoding="utf-8")


def run() -> None:
    job.run(main, __name__, required=("key",), positional=True)


if __name__ == "__main__":
    run()
