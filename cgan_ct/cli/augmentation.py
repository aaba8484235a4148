"""The training blocks' augmentation flags, shared by cgan-ct-train and cgan-ct-train-cascade (its stages).

``--mirror_axes z,y,x`` (the paper's: each axis mirrored with probability 1/2) or ``none`` (the body's
handedness kept), ``--[no]quarter_turns``, ``--max_rotation_deg``, ``--elastic_voxels`` and
``--elastic_sampling``; unset flags
leave the pipeline's defaults (cgan_ct.data.input_pipeline.PipelineOptions).
"""

from __future__ import annotations

from absl import app, flags

from cgan_ct.constants import ELASTIC_SAMPLINGS

AXIS_NAMES = ("z", "y", "x")  # the blocks' axes 0, 1, 2


def define_augmentation() -> dict:
    """Defines the flags; returns their holders for ``augmentation_from_flags``."""
    return {
        "mirror_axes": flags.DEFINE_list(
            "mirror_axes",
            None,
            "Axes mirrored at random in training: z,y,x (default, the paper's) or none (keeps the heart on the left).",
        ),
        "quarter_turns": flags.DEFINE_bool(
            "quarter_turns", None, "Turn training blocks by random multiples of 90 degrees in-plane (default on)."
        ),
        "max_rotation_deg": flags.DEFINE_float(
            "max_rotation_deg", None, "Small in-plane rotations up to this angle (default 0: off).", lower_bound=0.0
        ),
        "elastic_voxels": flags.DEFINE_float(
            "elastic_voxels",
            None,
            "Elastic deformation of training blocks, at most N voxels (default 0: off).",
            lower_bound=0.0,
        ),
        "elastic_sampling": flags.DEFINE_enum(
            "elastic_sampling",
            None,
            list(ELASTIC_SAMPLINGS),
            "How elastically deformed blocks are read: trilinear (default; smooths the noise) or "
            "noise_preserving (keeps the noise's power and grain).",
        ),
    }


def parse_axes(values) -> tuple[int, ...]:
    """``--mirror_axes`` names as axis numbers; a usage error naming an unknown one."""
    names = [v.strip().lower() for v in values if v.strip()]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in AXIS_NAMES]
    if unknown or len(set(names)) != len(names):
        raise app.UsageError(f"--mirror_axes takes distinct axes among z, y, x (or none), got {','.join(values)}")
    return tuple(sorted(AXIS_NAMES.index(n) for n in names))


def augmentation_from_flags(holders: dict) -> dict:
    """PipelineOptions keyword arguments of the flags that were given."""
    chosen = {name: holder.value for name, holder in holders.items() if holder.value is not None}
    if "mirror_axes" in chosen:
        chosen["mirror_axes"] = parse_axes(chosen["mirror_axes"])
    return chosen
