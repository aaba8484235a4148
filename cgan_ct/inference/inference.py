"""Whole scans through an exported generator: condition -> blocks -> prediction -> stitched HU volume.

Memory is bounded by a few volume-sized float32 arrays (the volume, the
stitching sum and its weights) plus one batch of blocks, whatever the scan's size.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cgan_ct.config import FLOAT32, LowDoseConfig
from cgan_ct.constants import AIR_HU, CONDITION_MODES, SEEDED_SIGNATURE
from cgan_ct.errors import InputError
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.volume import Volume, hu_to_int16
from cgan_ct.model import pretrained
from cgan_ct.model.export import (
    BlockGenerator,
    ModelInfo,
    is_exported_model,
    load_run_generator,
    resolve_model_dir,
)
from cgan_ct.model.run_record import is_run_dir
from cgan_ct.ops import corruption
from cgan_ct.ops.blocks import predict_volume
from cgan_ct.ops.lowdose import DOSE_GAMMA, residual_weight, simulate_lowdose
from cgan_ct.tasks import DOSE, task_spec

_SLAB = 32  # slices per chunk when corrupting a whole volume


class BlockModel:
    """A generator that maps HU blocks to HU blocks: an exported SavedModel
    (cgan-ct-export), a folder of its integer version folders (TF Serving's
    layout: the highest is loaded), a training run folder (its best generator),
    or a model shipped with the package (``pretrained:NAME``, cgan_ct.model.pretrained).

    ``model_dir`` is the folder loaded and ``version`` its version (None unless
    it was chosen among version folders). ``precision`` (float32, bfloat16,
    float16 or auto: cgan_ct.model.precision.resolve_inference_precision) is
    what the generator computes in: float32 runs the saved graph itself,
    another precision rebuilds the generator from its recorded settings in
    that precision with its float32 weights (the intensity mapping and the HU
    stay float32). ``self.precision`` is the resolved one."""

    def __init__(self, model_dir, precision: str = FLOAT32):
        import tensorflow as tf

        from cgan_ct.model.precision import resolve_inference_precision

        model_dir = pretrained.resolve(model_dir)
        if not is_run_dir(model_dir):
            model_dir, self.version = resolve_model_dir(model_dir)
        else:
            self.version = None
        self.model_dir = model_dir
        self._tf = tf
        if is_run_dir(model_dir):  # a training run: its best generator, wrapped in memory
            generator, run = load_run_generator(model_dir)
            self.info = ModelInfo.from_run(run)
            module = BlockGenerator(generator, self.info.mapping, self.info.block_size)
            self._signature = module.generate_hu_seeded
        elif is_exported_model(model_dir):
            self.info = ModelInfo.load(model_dir)
            self._signature = tf.saved_model.load(str(model_dir)).signatures[SEEDED_SIGNATURE]
        else:
            raise InputError(model_dir, "neither a model exported by cgan-ct-export nor a cgan-ct-train run folder")
        self.block_size = int(self.info.block_size)
        self.task = self.info.task
        self.precision = resolve_inference_precision(precision)
        if self.precision.name != FLOAT32:
            self._signature = self._rebuilt_in_precision()

    def _rebuilt_in_precision(self):
        """The seeded HU signature of the generator rebuilt in ``self.precision``, with the model's weights."""
        from cgan_ct.model.export import generator_from_export, generator_in_precision

        if not self.info.model:
            raise InputError(
                self.model_dir, f"records no model settings: it runs in float32 only, not {self.precision.name}"
            )
        if is_run_dir(self.model_dir):
            generator, _ = load_run_generator(self.model_dir, policy=self.precision.policy)
        else:
            generator = generator_in_precision(
                generator_from_export(self.model_dir), self.info.model, self.precision.policy
            )
        return BlockGenerator(generator, self.info.mapping, self.block_size).generate_hu_seeded

    @property
    def tile_grid(self) -> int:
        """Tile starts must be multiples of this (a depixelation model's factor: its cells start at a
        block's first voxel in training), else 1. See cgan_ct.ops.blocks.tiled_length."""
        return int(self.info.factor) if task_spec(self.task).factor_grid else 1

    def predictor(self, seed: int):
        """A function HU blocks [B, N, N, N, 1] -> HU blocks, with reproducible noise per call.

        Blocks are checked before the model sees them (see ``check_blocks``):
        InputError for a wrong shape, a non-real dtype or a NaN or Inf.
        Finite HU outside [-1024, 3071] are clamped by the model (cgan_ct.model.export).
        """
        calls = iter(range(1 << 62))
        tf = self._tf

        def predict(blocks_hu):
            blocks_hu = check_blocks(blocks_hu, self.block_size)
            seed_pair = tf.constant([seed, next(calls)], tf.int64)
            out = self._signature(blocks_hu=tf.constant(blocks_hu, tf.float32), seed=seed_pair)
            return out["blocks_hu"].numpy()

        return predict


def check_blocks(blocks_hu, block_size: int) -> np.ndarray:
    """``blocks_hu`` as float32 [B, N, N, N, 1] once it is that shape, real-valued and finite; else InputError.

    The SavedModel checks the same (models exported before issue 18 did not),
    but here the message can say how many values are bad.
    """
    blocks_hu = np.asarray(blocks_hu)
    n = int(block_size)
    if blocks_hu.dtype.kind not in "fiub":
        raise InputError(None, f"blocks_hu must be real numbers, got {blocks_hu.dtype}")
    if blocks_hu.ndim != 5 or blocks_hu.shape[1:] != (n, n, n, 1):
        raise InputError(
            None, f"blocks_hu must be [batch, {n}, {n}, {n}, 1] (the model's block size {n}), got {blocks_hu.shape}"
        )
    blocks_hu = blocks_hu.astype(np.float32, copy=False)
    bad = blocks_hu.size - int(np.count_nonzero(np.isfinite(blocks_hu)))
    if bad:
        raise InputError(None, f"blocks_hu holds {bad} NaN or Inf value(s); the model takes finite HU only")
    return blocks_hu


def condition_volume(
    volume: Volume,
    task: str,
    seed: int = 0,
    peak: float = corruption.DEFAULT_PEAK,
    factor: int = corruption.DEFAULT_FACTOR,
    lowdose: LowDoseConfig | None = None,
    pyramid: str = "subsample",
) -> Volume:
    """The task's condition for a whole volume, by the same corruption code as training.

    Computed in slabs of ``_SLAB`` slices (a multiple of any pixelation factor
    used, so pixel cells never straddle two slabs), each with its own seed:
    memory stays at one slab of temporaries. Task lowdose simulates ``lowdose``
    (the dose a model was trained on) slice by slice (cgan_ct.ops.lowdose).
    """
    import tensorflow as tf

    condition_id = pseudonym("vol", f"{volume.volume_id}:{task}:condition:{seed}")
    if task_spec(task).stored_condition:  # at inference: simulated from the scan, as the model's was
        if lowdose is None:
            raise InputError(
                volume.volume_id,
                "a lowdose model trained on real pairs has no dose to simulate: "
                "give it a real low-dose scan as it is (condition as_is)",
            )
        simulated = simulate_lowdose(volume.hu, volume.spacing_mm, lowdose, key=f"{volume.volume_id}:{seed}")
        hu, _ = hu_to_int16(np.rint(simulated), volume.volume_id)
        return volume.replace(hu=hu, volume_id=condition_id)

    if _SLAB % factor:
        raise ValueError(f"depixelation factor {factor} must divide {_SLAB}")
    out = np.empty_like(volume.hu)
    for index, z in enumerate(range(0, volume.shape[0], _SLAB)):
        slab = volume.hu[z : z + _SLAB].astype(np.float32)
        hu = corruption.make_condition(slab, task, tf.constant([seed, index]), peak, factor, pyramid=pyramid)
        out[z : z + _SLAB], _ = hu_to_int16(np.asarray(hu), volume.volume_id)
    return volume.replace(hu=out, volume_id=condition_id)


def _dose_weight(model: BlockModel, task: str, dose: float | None) -> float:
    """The share of the model's correction kept for a condition at ``dose`` (1: all; no dose given)."""
    if dose is None:
        return 1.0
    trained = model.info.lowdose
    dose_task = task_spec(task).noise_level == DOSE
    if not dose_task or trained is None or trained.dose is None:
        what = f"a {task} model trained on real pairs" if dose_task else f"a {task} model"
        raise InputError(None, f"a dose applies to lowdose models trained on a simulated dose, not to {what}")
    if not 0 < dose <= 1:
        raise InputError(None, f"the dose is a fraction of full dose in (0, 1], got {dose}")
    return residual_weight(dose, trained.dose, DOSE_GAMMA)


def infer_volume(
    volume: Volume,
    model: BlockModel,
    task: str | None = None,
    condition_mode: str = "simulate",
    overlap: float = 0.25,
    window: str = "gaussian",
    batch_size: int = 16,
    seed: int = 0,
    progress=None,
    dose: float | None = None,
) -> tuple[Volume, Volume]:
    """(condition, generated) volumes, both int16 HU on ``volume``'s grid.

    ``condition_mode`` "simulate" derives the task's condition from the volume
    (noise, pixelation) with the parameters the model was trained on (its
    Poisson peak, its factor), "as_is" takes the volume itself as the
    condition (e.g. a real low-dose scan for a denoising model).

    ``dose`` (lowdose models trained on a simulated dose): the condition's dose as a fraction of full
    dose, simulated at that dose ("simulate") or stated for the scan given ("as_is"); the model's
    correction is kept in proportion to the noise that dose adds (``ops.lowdose.residual_weight``:
    all of it at the model's own dose or lower, none at full dose). None: the model's own dose.
    """
    task = task or model.task
    if condition_mode not in CONDITION_MODES:
        raise ValueError(f"condition_mode must be one of {CONDITION_MODES}, got {condition_mode!r}")
    if task != model.task:
        raise InputError(None, f"the model was trained for {model.task!r}, not {task!r}")
    weight = _dose_weight(model, task, dose)
    if condition_mode == "simulate":
        lowdose = model.info.lowdose
        if dose is not None:
            lowdose = dataclasses.replace(lowdose, dose=dose)
        info = model.info
        condition = condition_volume(volume, task, seed, info.peak, info.factor, lowdose, info.pyramid)
    else:
        condition = volume
    generated_hu = predict_volume(
        condition.hu,
        model.predictor(seed),
        model.block_size,
        overlap,
        batch_size,
        window,
        AIR_HU,
        progress,
        grid=model.tile_grid,
    )
    if weight < 1:
        generated_hu = condition.hu + weight * (generated_hu - condition.hu)
    generated, _ = hu_to_int16(generated_hu, volume.volume_id)
    generated_id = pseudonym("vol", f"{volume.volume_id}:{task}:generated:{seed}")
    return condition, volume.replace(hu=generated, volume_id=generated_id, warnings=())
