"""The written split of the shared real CT cohort (``experiments/cohort.json``): which series train, which are held out.

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
