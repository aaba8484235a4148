"""The written split of the shared real CT cohort (``benchmarks/cohort.json``): which series train, which are held out.

Scripts in this folder take their ``--train`` / ``--heldout`` defaults from here; ``held_out_by_rule`` recomputes
the held-out set from the rule the file states, so a test can check the file against its rule.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

COHORT_FILE = pathlib.Path(__file__).resolve().with_name("cohort.json")


def load() -> dict:
    return json.loads(COHORT_FILE.read_text())


def train_series() -> list[str]:
    return list(load()["train"])


def heldout_series() -> list[str]:
    return list(load()["heldout"])


def held_out_by_rule(cohort: dict) -> list[str]:
    """Per manufacturer, the first eligible chest series by SHA-256(salt + folder name); sorted by name."""
    chosen = {}
    for name, info in sorted(cohort["series"].items(), key=lambda item: _digest(cohort["salt"], item[0])):
        if info["region"] == "chest" and name not in cohort["trained_before"]:
            chosen.setdefault(info["manufacturer"], name)
    return sorted(chosen.values())


def _digest(salt: str, name: str) -> str:
    return hashlib.sha256((salt + name).encode()).hexdigest()


def central_slices(volume, count: int):
    """``volume`` (a cgan_ct Volume) cut to its central ``count`` slices, a copy: the slabs the scripts score."""
    start = max(0, (volume.shape[0] - count) // 2)
    return volume.replace(hu=volume.hu[start : start + count].copy())


def score_heldout(heldout, task: str, model, slices: int, bm3d: bool) -> tuple[list[dict], list]:
    """The rows of every held-out series (its central ``slices`` slices, 0: all) and each one's figure.

    The protocol every script here scores by: the model beside its condition and the classical baselines
    (BM3D too when ``bm3d``, for the noise tasks; it is no depixelation baseline), overlap 0.25.
    """
    from cgan_ct.constants import DEPIXELATE
    from cgan_ct.inference.baselines import SLOW_BASELINES, check_available
    from cgan_ct.inference.evaluation import evaluate_volume
    from cgan_ct.io.volume_reader import read_volume

    skip = () if bm3d and task != DEPIXELATE else SLOW_BASELINES
    check_available(skip)  # before the first scan is read
    rows, figures = [], []
    for path in heldout:
        volume = read_volume(path)
        if slices:
            volume = central_slices(volume, slices)
        result = evaluate_volume(volume, task, model, overlap=0.25, skip_baselines=skip)
        rows += result.rows
        figures.append(result.figure)
    return rows, figures
