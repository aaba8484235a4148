"""Synthetic CT volumes of patients who do not exist, from white noise.

A cascade folder (written by cgan_ct.synthesis.cascade_training) holds a set of
SavedModels and a description:

  cascade.json   levels, in-plane size, spacing, stage order, training summary,
                 the output calibration (a monotone HU map the final volume goes through)
                 and the output grain (its texture: cgan_ct.synthesis.grain)
  coarse/        the coarse generator (cgan_ct.synthesis.coarse_export): noise -> level L
  stage<j>/      a depixelation block model (cgan-ct-export format): level
                 j + 1 -> level j, for j = L-1 ... 0

``Cascade.slabs`` draws a coarse volume and refines it stage by stage, block
by block (cgan_ct.synthesis.cascade), yielding the full-resolution volume slab by slab:
memory is bounded by the block and the batch, not by the number of slices.
Every model is a plain TensorFlow SavedModel, servable without this project;
this module is the glue that chains them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cgan_ct.constants import CASCADE_FILE, DEPIXELATE
from cgan_ct.errors import InputError
from cgan_ct.inference.inference import BlockModel
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.volume import AcquisitionInfo, Volume, hu_to_int16
from cgan_ct.ops.pyramid import level_length
from cgan_ct.synthesis.calibration import Calibration
from cgan_ct.synthesis.cascade import cascade_stream, refine_stream
from cgan_ct.synthesis.cascade_spec import CascadeSpec, cascade_folder
from cgan_ct.synthesis.coarse_export import CoarseModel
from cgan_ct.synthesis.grain import Grain
from cgan_ct.synthesis.placement import Placement, draw, place_coarse

SYNTHETIC_SOURCE = "synthetic"


class Cascade:
    """A cascade folder, loaded: the coarse generator and the depixelation stages, coarsest first."""

    def __init__(self, folder, info: CascadeSpec | None = None, grain: bool = True, placement: bool = True):
        """``info``: the cascade's description when it is not (yet) the folder's cascade.json (the trainer
        draws from a cascade before it writes it). ``grain`` False: the volumes without the output grain
        (as the stages and the calibration leave them), where the cascade has one. ``placement`` False: every
        volume on the cascade's one grid (``spacing_mm``, the body where the coarse generator drew it), where the
        cascade records the training volumes' placements (cgan_ct.synthesis.placement)."""
        folder = cascade_folder(folder)  # a path, or pretrained:synthesis
        self.folder = folder
        self.info = info or CascadeSpec.load(folder)
        self.levels = self.info.levels
        self.size = self.info.size
        self.spacing_mm = self.info.spacing_mm
        self.coarse = CoarseModel(folder / self.info.coarse)
        self.stages = [BlockModel(folder / name) for name in self.info.stages]
        if len(self.stages) != self.levels:
            raise InputError(folder, f"{CASCADE_FILE} lists {len(self.stages)} stages for {self.levels} levels")
        for name, stage in zip(self.info.stages, self.stages, strict=True):
            if stage.task != DEPIXELATE:
                raise InputError(folder / name, f"is a {stage.task!r} model; a cascade stage must depixelate")
        if self.coarse.size != level_length(self.size, self.levels):
            raise InputError(folder, f"coarse size {self.coarse.size} does not match {self.size} / 2**{self.levels}")
        try:
            recorded = self.info.output_calibration
            self.calibration = None if recorded is None else Calibration.from_json(recorded)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(folder / CASCADE_FILE, f"output_calibration is malformed ({exc})") from None
        try:
            recorded = self.info.output_grain if grain else None
            self.grain = None if recorded is None else Grain.from_json(recorded)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(folder / CASCADE_FILE, f"output_grain is malformed ({exc})") from None
        try:
            recorded = self.info.placements if placement else None
            self.placements = None if not recorded else [Placement.from_json(p) for p in recorded]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(folder / CASCADE_FILE, f"placements are malformed ({exc})") from None

    def level_shapes(self, slices: int) -> list[tuple[int, int, int]]:
        """Shapes (z, y, x) the stages produce, coarsest first; the last is the final volume's."""
        return [
            (level_length(slices, j), level_length(self.size, j), level_length(self.size, j))
            for j in reversed(range(self.levels))
        ]

    def plan(self, seed: int, slices: int) -> tuple[np.ndarray, Placement | None]:
        """The coarse draw (HU) of the volume for ``seed`` and its grid (None: the cascade's own, ``spacing_mm``).
        Where the cascade has placements, the grid is drawn from them (cgan_ct.synthesis.placement.draw) and the
        coarse draw put on it (``place_coarse``: its body moved to the grid's offset by whole pixels), so that
        the stages make every voxel of the volume on that grid."""
        if slices < 1:
            raise ValueError(f"slices must be >= 1, got {slices}")
        coarse = self.coarse.draw(seed, level_length(slices, self.levels))
        if self.placements is None:
            return coarse, None
        placement = draw(self.placements, seed)
        return place_coarse(coarse, self._coarse_spacing(), placement, self.levels), placement

    def _coarse_spacing(self) -> list[float]:
        return [s * 2**self.levels for s in self.spacing_mm[1:]]

    def output_spacing(self, seed: int, slices: int) -> tuple[float, float, float]:
        """(z, y, x) spacing in mm of the volume for ``seed`` of ``slices`` slices."""
        return self._spacing(self.plan(seed, slices)[1])

    def _spacing(self, placement: Placement | None) -> tuple[float, float, float]:
        spacing = tuple(float(s) for s in self.spacing_mm)
        return spacing if placement is None else (spacing[0], *placement.spacing_mm)

    def slabs(
        self, seed: int, slices: int, overlap: float = 0.25, batch_size: int = 16, progress=None, plan=None
    ) -> Iterator[np.ndarray]:
        """The synthetic volume for ``seed`` as float32 HU slabs [rows, size, size], in z order, through the
        output calibration and through the output grain, where the cascade has them; on its grid (``plan``: the
        coarse draw, placed, and its grid; drawn here unless given).

        ``progress`` is called as ``progress(stage, blocks_done, blocks_total)``
        (stage 0 the coarsest refinement).
        """
        coarse, placement = plan if plan is not None else self.plan(seed, slices)
        stream = cascade_stream(
            coarse,
            self.stage_predictors(seed),
            self.level_shapes(slices),
            overlap,
            batch_size=batch_size,
            progress=progress,
        )
        if self.calibration is not None:
            stream = map(self.calibration.apply, stream)
        return stream if self.grain is None else self.grain.stream(stream, self._spacing(placement), seed)

    def stage_predictors(self, seed: int) -> list[tuple]:
        """(predictor, block edge) of each stage, coarsest first, with the noise seeds the volume for ``seed``
        is drawn with."""
        return [(model.predictor(seed * 1009 + i), model.block_size) for i, model in enumerate(self.stages)]

    def synthesize(self, seed: int, slices: int, overlap: float = 0.25, batch_size: int = 16, progress=None) -> Volume:
        """One synthetic volume (int16 HU, canonical) for ``seed``; only the int16 result grows with ``slices``."""
        hu = np.empty((slices, self.size, self.size), np.int16)
        plan = self.plan(seed, slices)
        z = 0
        for slab in self.slabs(seed, slices, overlap, batch_size, progress, plan=plan):
            hu[z : z + len(slab)], _ = hu_to_int16(slab, "synthetic volume")
            z += len(slab)
        return synthetic_volume(hu, self._spacing(plan[1]), seed, self.info.cascade_id)


def level_volumes(cascade: Cascade, seed: int, slices: int, between=None) -> list[np.ndarray]:
    """The coarse draw and each stage's output for ``seed``, coarsest first (float32 HU, whole volumes, each level
    materialized: for measuring, not serving); the coarse draw placed where the cascade places it (``plan``), the
    last through the output calibration, as ``Cascade.slabs`` gives it before the grain. ``between(level, hu) ->
    hu`` is applied to each level before it is kept and the next stage refines it (a probe; level
    ``cascade.levels`` is the coarse draw)."""
    between = between or (lambda level, hu: hu)
    coarse = np.asarray(cascade.plan(seed, slices)[0], np.float32)
    levels = [between(cascade.levels, coarse)]
    stages = cascade.stage_predictors(seed)
    for (predictor, block), shape in zip(stages, cascade.level_shapes(slices), strict=True):
        refined = np.concatenate(list(refine_stream([levels[-1]], shape, predictor, block, overlap=0.25)))
        levels.append(between(cascade.levels - len(levels), refined))
    if cascade.calibration is not None:
        levels[-1] = cascade.calibration.apply(levels[-1]).astype(np.float32)
    return levels


def synthetic_volume(hu: np.ndarray, spacing_mm, seed: int, cascade_id: str) -> Volume:
    """A Volume for generated voxels: canonical axes, centred, ids that name no source."""
    origin = [-(n - 1) * s / 2 for n, s in zip(hu.shape[::-1], spacing_mm[::-1], strict=True)]
    return Volume(
        hu=hu,
        spacing_mm=tuple(float(s) for s in spacing_mm),
        origin_mm=(origin[0], origin[1], 0.0),
        direction=np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        volume_id=pseudonym("vol", f"synthetic:{cascade_id}:{seed}:{hu.shape[0]}"),
        patient_key=pseudonym("syn", f"synthetic:{cascade_id}:{seed}"),
        acquisition=AcquisitionInfo(SYNTHETIC_SOURCE, manufacturer="cgan-ct (synthetic)", kernel="synthetic"),
    )
