"""``run.json``: what a training run trains, the record training writes and export, inference and resume read.

Kept apart from ``training`` so that reading a run (``export``, serving a run
folder) never imports the training code.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from cgan_ct.config import outer_normalization_used
from cgan_ct.constants import RUN_FILE
from cgan_ct.errors import InputError
from cgan_ct.io.json_files import read_json_object, versioned_fields, write_json_atomic

RUN_FORMAT_VERSION = 1
_WHAT = "training run record"
# Settings added after runs were recorded without them: the value those runs trained with.
_TRAINED_BEFORE = {
    "model": {
        "l1_space": "normalized",
        "ema_decay": 0.0,
        "lr_schedule": "constant",
        "residual_base": "condition",
        "residual_factor": 2,
        "residual_sigma": 1.0,
        "outer_normalization": "on",
        "spectral_weight": 0.0,
        "spectral_patch": 0,
        "upsample": "transpose",
    },
    "pipeline": {
        "air_keep": 1.0,
        "condition_blur": 0.0,
        "condition_noise_hu": 0.0,
        "condition_shift": 0,
        "noise_scale_min": 1.0,
        "mirror_axes": [0, 1, 2],  # the augmentation switches (issue 33): a run before them turned and mirrored
        "quarter_turns": True,
        "elastic_voxels": 0.0,
        "elastic_sampling": "trilinear",
        "pyramid": "subsample",
    },
}


def model_settings_trained(model: dict) -> dict:
    """A recorded ModelConfig (as a dict) with the settings it predates at the values it trained with."""
    return {**_TRAINED_BEFORE["model"], **model}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run's settings and data. ``model`` is the ModelConfig as a dict; ``pipeline`` the PipelineOptions."""

    model: dict
    task: str
    seed: int
    pipeline: dict
    dataset_dir: str
    dataset_fingerprint: str
    intensity: dict
    format_version: int = RUN_FORMAT_VERSION
    condition: dict | None = None  # the dataset's stored condition (manifest "condition"), e.g. the low dose
    # the precision the latest session trained in: {"used", "requested", "reason"} (cgan_ct.model.precision)
    precision: dict | None = None

    @property
    def block_size(self) -> int:
        return int(self.model["block_size"])

    def comparable(self) -> dict:
        """What must match to continue a run (more epochs may be asked for, in another precision: the
        variables are float32 in every precision)."""
        fields = ("model", "task", "seed", "pipeline", "dataset_fingerprint")  # the fingerprint covers the condition
        record = json.loads(json.dumps(self.to_json()))  # tuples and lists alike
        for key, before in _TRAINED_BEFORE.items():
            record[key] = {**before, **record[key]}
        model = record["model"]
        outer = model["outer_normalization"]
        model["outer_normalization"] = outer_normalization_used(outer, model.get("residual", True))
        free = {"epochs": None, "precision": None, "mixed_precision": None}
        return {k: ({**record[k], **free} if k == "model" else record[k]) for k in fields}

    def differences(self, other: RunRecord) -> list[str]:
        """``name: this -> other`` for each comparable setting that differs (nested settings by name)."""
        mine, theirs = self.comparable(), other.comparable()
        out = []
        for key in mine:
            a, b = mine[key], theirs[key]
            if isinstance(a, dict) and isinstance(b, dict):
                out += [
                    f"{name}: {a.get(name)!r} -> {b.get(name)!r}"
                    for name in sorted(a | b)
                    if a.get(name) != b.get(name)
                ]
            elif a != b:
                out.append(f"{key}: {a!r} -> {b!r}")
        return out

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, path=None) -> RunRecord:
        return cls(**versioned_fields(cls, data, path, _WHAT, RUN_FORMAT_VERSION))

    @classmethod
    def load(cls, run_dir) -> RunRecord:
        """The record of the run in ``run_dir``; InputError if it is not a training run folder."""
        path = pathlib.Path(run_dir) / RUN_FILE
        if not path.exists():
            raise InputError(pathlib.Path(run_dir), f"not a training run folder (no {RUN_FILE})")
        return cls.from_json(read_json_object(path, _WHAT), path)

    def save(self, run_dir) -> pathlib.Path:
        return write_json_atomic(pathlib.Path(run_dir) / RUN_FILE, self.to_json())


def is_run_dir(folder) -> bool:
    return (pathlib.Path(folder) / RUN_FILE).exists()
