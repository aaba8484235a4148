"""Scoring a reader study: readers' answers against the key (cgan_ct.study.reader_study).

Accuracy is the fraction of answered pairs where the reader picked the real
image. For each reader and for all readers pooled, overall and per window:
an exact (Clopper-Pearson) 95% confidence interval, and an exact two-sided
binomial test against 50%, the accuracy of guessing. A generator whose images
readers cannot tell from real ones scores near 50% (p large); an interval that
excludes 50% means readers could tell. Pooling treats every answer as
independent, which readers who share a bias are not: read the per-reader rows
too.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
from fractions import Fraction

from scipy import special

from cgan_ct.errors import InputError
from cgan_ct.study.reader_page import ANSWERS_FORMAT
from cgan_ct.study.reader_study import KEY_FORMAT

POOLED = "pooled"
ALL_WINDOWS = "all"
SIDES = ("left", "right")


@dataclasses.dataclass(frozen=True)
class Answer:
    """One reader's pick in one trial: ``choice`` is "left" or "right"; ``confidence`` 1..5 or None."""

    trial: int
    choice: str
    left_image: str
    right_image: str
    confidence: int | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ReaderAnswers:
    reader: str
    study_id: str
    answers: tuple[Answer, ...]
    source: str


@dataclasses.dataclass(frozen=True)
class Score:
    """Accuracy of ``reader`` (or POOLED) in ``window`` (or ALL_WINDOWS): ``correct`` of ``answered``."""

    reader: str
    window: str
    answered: int
    correct: int
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else math.nan


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for successes / trials (Clopper and Pearson, 1934)."""
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    alpha = 1.0 - level
    low = 0.0 if successes == 0 else float(special.betaincinv(successes, trials - successes + 1, alpha / 2))
    high = 1.0 if successes == trials else float(special.betaincinv(successes + 1, trials - successes, 1 - alpha / 2))
    return low, high


def binomial_p_half(successes: int, trials: int) -> float:
    """Exact two-sided p-value of ``successes`` of ``trials`` against a success probability of 1/2.

    The distribution is symmetric, so it is twice the smaller tail (capped at
    1), computed in integers.
    """
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    tail = sum(math.comb(trials, i) for i in range(min(successes, trials - successes) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**trials)))


def read_key(path: str | os.PathLike) -> dict:
    """The key written by build_study: ``study_id`` and ``trials`` as {trial number: key row}."""
    key = _load_json(path)
    if key.get("format") != KEY_FORMAT or not isinstance(key.get("trials"), list):
        raise InputError(path, f"not a reader study key (format {KEY_FORMAT!r} expected)")
    try:
        trials = {int(t["trial"]): t for t in key["trials"]}
        for t in trials.values():
            if t["real_side"] not in SIDES or not t["window"]:
                raise ValueError(f"trial {t['trial']}: bad real_side or window")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"malformed key: {exc}") from None
    return {"study_id": key.get("study_id"), "trials": trials}


def _load_json(path: str | os.PathLike) -> dict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a JSON object")
    return data


def _answer(row: dict) -> Answer | None:
    """An Answer from a JSON object or CSV row; None for a trial left unanswered."""
    choice = row.get("choice")
    if choice in (None, ""):
        return None
    if choice not in SIDES:
        raise ValueError(f"trial {row.get('trial')}: choice must be left or right, got {choice!r}")
    confidence = row.get("confidence")
    confidence = None if confidence in (None, "") else int(confidence)
    if confidence is not None and not 1 <= confidence <= 5:
        raise ValueError(f"trial {row.get('trial')}: confidence must be 1..5, got {confidence}")
    return Answer(
        int(row["trial"]), choice, str(row["left_image"]), str(row["right_image"]), confidence, row.get("note") or ""
    )


def read_answers(path: str | os.PathLike) -> ReaderAnswers:
    """A reader's answers as downloaded from the page, JSON or CSV (by suffix)."""
    path = pathlib.Path(path)
    try:
        if path.suffix.lower() == ".csv":
            if not path.is_file():
                raise InputError(path, "no such file")
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
            if not rows or "choice" not in rows[0]:
                raise InputError(path, "not a reader study answers CSV (no rows, or no 'choice' column)")
            ids, readers = {r.get("study_id") for r in rows}, {r.get("reader") for r in rows}
            if len(ids) != 1 or len(readers) != 1:
                raise InputError(path, "rows of more than one study or reader")
            study_id, reader = ids.pop(), readers.pop()
        else:
            data = _load_json(path)
            if data.get("format") != ANSWERS_FORMAT or not isinstance(data.get("answers"), list):
                raise InputError(path, f"not a reader study answers file (format {ANSWERS_FORMAT!r} expected)")
            rows, study_id, reader = data["answers"], data.get("study_id"), data.get("reader")
        answers = tuple(a for a in map(_answer, rows) if a is not None)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(path, f"malformed answers: {exc}") from None
    return ReaderAnswers(str(reader or path.stem), str(study_id), answers, str(path))


def check_answers(key: dict, readers: list[ReaderAnswers]) -> None:
    """Every answer file belongs to the key's study, names each trial once, with the key's images."""
    seen_readers = set()
    for r in readers:
        if r.study_id != key["study_id"]:
            raise InputError(r.source, f"answers to study {r.study_id}, but the key is of {key['study_id']}")
        if r.reader in seen_readers:
            raise InputError(r.source, f"reader {r.reader!r} appears in more than one answers file")
        seen_readers.add(r.reader)
        numbers = [a.trial for a in r.answers]
        if len(numbers) != len(set(numbers)):
            raise InputError(r.source, "a trial is answered more than once")
        for a in r.answers:
            row = key["trials"].get(a.trial)
            if row is None:
                raise InputError(r.source, f"trial {a.trial} is not in the key")
            if (a.left_image, a.right_image) != (row["left_image"], row["right_image"]):
                raise InputError(r.source, f"trial {a.trial} shows other images than the key's")


def _score(reader: str, window: str, outcomes: list[bool]) -> Score:
    n, k = len(outcomes), sum(outcomes)
    low, high = clopper_pearson(k, n) if n else (math.nan, math.nan)
    return Score(reader, window, n, k, low, high, binomial_p_half(k, n) if n else math.nan)


def score_readers(key: dict, readers: list[ReaderAnswers]) -> list[Score]:
    """Scores per reader then pooled; within each, per window (sorted) then all windows."""
    check_answers(key, readers)
    windows = sorted({t["window"] for t in key["trials"].values()})
    outcomes = {
        r.reader: [
            (key["trials"][a.trial]["window"], a.choice == key["trials"][a.trial]["real_side"]) for a in r.answers
        ]
        for r in readers
    }
    outcomes[POOLED] = [o for r in readers for o in outcomes[r.reader]]
    scores = []
    for reader in [r.reader for r in readers] + [POOLED]:
        for window in windows:
            scores.append(_score(reader, window, [ok for w, ok in outcomes[reader] if w == window]))
        if len(windows) > 1:
            scores.append(_score(reader, ALL_WINDOWS, [ok for _, ok in outcomes[reader]]))
    return scores


def markdown_table(scores: list[Score]) -> str:
    """One row per score: answered pairs, correct picks, accuracy, 95% CI and p against 50%."""
    lines = [
        "| reader | window | pairs | correct | accuracy | 95% CI (Clopper-Pearson) | p vs 50% (exact, two-sided) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        if s.answered:
            figures = f"{100 * s.accuracy:.1f}% | {100 * s.ci_low:.1f}% to {100 * s.ci_high:.1f}% | {s.p_value:.3g}"
        else:
            figures = "- | - | -"
        lines.append(f"| {s.reader} | {s.window} | {s.answered} | {s.correct} | {figures} |")
    return "\n".join(lines)
