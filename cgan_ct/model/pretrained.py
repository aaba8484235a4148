"""Models that ship with the package: ``pretrained:NAME`` wherever a model folder is asked for.

Each is an exported block generator (cgan-ct-export's SavedModel folder with its
cgan_ct_model.json) and a MODEL_CARD.md, under ``pretrained_models/NAME``,
trained by ``experiments/train_pretrained.py`` on the shared real chest cohort;
or a synthesis cascade (``pretrained:synthesis``: cgan-ct-train-cascade's
``cascade/`` folder and a MODEL_CARD.md, shipped by ``experiments/ship_synthesis.py``).
"""

from __future__ import annotations

import pathlib

from cgan_ct.errors import InputError
from cgan_ct.model.export import is_exported_model

PREFIX = "pretrained:"
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent / "pretrained_models"
MODEL_CARD_FILE = "MODEL_CARD.md"


def is_pretrained_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def available(kind=is_exported_model) -> list[str]:
    """Names of the shipped models of one kind: ``kind(folder)`` says whether a folder is one (default:
    exported block generators; ``cgan_ct.synthesis.cascade_spec.is_cascade``: synthesis cascades)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if kind(p))


def resolve(spec, kind=is_exported_model) -> pathlib.Path:
    """A model folder for ``spec``: ``pretrained:NAME`` -> the shipped model's folder (of the ``kind`` asked
    for, as in ``available``), anything else as a path."""
    if not is_pretrained_spec(spec):
        return pathlib.Path(spec)
    name = spec[len(PREFIX) :]
    folder = PRETRAINED_DIR / name
    if not name or "/" in name or not kind(folder):
        shipped = ", ".join(f"{PREFIX}{n}" for n in available(kind)) or "none of this kind in this installation"
        raise InputError(spec, f"no such pretrained model; shipped: {shipped}")
    return folder
