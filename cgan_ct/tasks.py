"""What each task is, in one place: where its condition comes from, how its tiles align, what its residual
output corrects, which noise level applies to it, and which classical methods it is compared with.

Code that behaves differently per task asks the task's ``TaskSpec`` (``task_spec(name)``) rather than
comparing the name with a constant: adding a task, or changing what one needs, is one entry here. The
condition's arithmetic itself (Poisson noise, pixelation, the low-dose simulation) stays in
``cgan_ct.ops.corruption`` and ``cgan_ct.ops.lowdose``.
"""

from __future__ import annotations

import dataclasses

from cgan_ct.constants import AUTOENCODE, DENOISE, DEPIXELATE, LOWDOSE, TASKS

# where the condition comes from
IDENTITY = "identity"  # the block itself
DERIVED = "derived"  # computed from the block on the fly (Poisson noise, pixelation)
STORED = "stored"  # stored beside each block at conversion (a simulated low dose, or a real low-dose pair)

# the noise level a noise task's condition has, and that a user can name
PEAK = "peak"  # the Poisson peak of denoise (lower: noisier)
DOSE = "dose"  # the fraction of full dose of lowdose

NOISE_BASELINES = ("gaussian", "non_local_means", "bm3d")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task's needs.

    Attributes:
      name: the task's name (``cgan_ct.constants.TASKS``).
      condition: IDENTITY, DERIVED or STORED: where the condition comes from.
      residual: whether the generator's residual output applies (not for autoencode: starting as the identity,
        it would score perfectly at step 0 and learn nothing).
      residual_base: what the residual output corrects by default: "condition" (Y) or "cubic" (the cubic
        interpolation of Y's samples every ``factor`` voxels).
      factor_grid: tiles start on multiples of the pixelation factor (depixelate: a cell starts at a block's
        first voxel in training).
      noise_level: PEAK, DOSE or None: which noise level the condition has (the noise range of training, the
        denoisers' level, ``cgan-ct-infer --dose``).
      baselines: the classical methods the task is compared with, fast first.
    """

    name: str
    condition: str
    residual: bool
    residual_base: str
    factor_grid: bool
    noise_level: str | None
    baselines: tuple[str, ...]

    @property
    def stored_condition(self) -> bool:
        return self.condition == STORED

    @property
    def noise(self) -> bool:
        return self.noise_level is not None


TASK_SPECS = {
    AUTOENCODE: TaskSpec(AUTOENCODE, IDENTITY, False, "condition", False, None, ()),
    DENOISE: TaskSpec(DENOISE, DERIVED, True, "condition", False, PEAK, NOISE_BASELINES),
    DEPIXELATE: TaskSpec(DEPIXELATE, DERIVED, True, "cubic", True, None, ("trilinear", "tricubic")),
    LOWDOSE: TaskSpec(LOWDOSE, STORED, True, "condition", False, DOSE, NOISE_BASELINES),
}
assert tuple(TASK_SPECS) == TASKS  # one spec per task, in the order of TASKS


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task``; ValueError naming the known tasks for anything else."""
    try:
        return TASK_SPECS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(TASKS)}") from None
