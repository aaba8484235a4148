"""Models that ship with the package: ``pretrained:NAME`` wherever a model folder is asked for.

Each is an exported block generator (cgan-ct-export's SavedModel folder with its
cgan_ct_model.json) and a MODEL_CARD.md, under ``pretrained_models/NAME``,
trained by ``experiments/train_pretrained.py`` on the shared real chest cohort.
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


def available() -> list[str]:
    """Names of the shipped models."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if is_exported_model(p))


def resolve(spec) -> pathlib.Path:
    """A model folder for ``spec``: ``pretrained:NAME`` -> the shipped model's folder, anything else as a path."""
    if not is_pretrained_spec(spec):
        return pathlib.Path(spec)
    name = spec[len(PREFIX) :]
    folder = PRETRAINED_DIR / name
    if not name or "/" in name or not is_exported_model(folder):
        shipped = ", ".join(f"{PREFIX}{n}" for n in available()) or "none in this installation"
        raise InputError(spec, f"no such pretrained model; shipped: {shipped}")
    return folder
