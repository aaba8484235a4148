"""The trained coarse generator as a SavedModel (signature ``generate``), and loading it back.

Beside the SavedModel, ``cgan_ct_coarse.json`` records its in-plane size,
intensity mapping and calibration (``calibration.Calibration``, applied inside the
signature: served draws are calibrated). Written by the block models' writer
(cgan_ct.model.export.save_serving_model: keras.export.ExportArchive, TF
Serving's warmup request, atomic). Serving needs TensorFlow only; this module
never imports the training code.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import tensorflow as tf

from cgan_ct.config import CoarseConfig
from cgan_ct.constants import COARSE_INFO_FILE, COARSE_SIGNATURE, SAVED_MODEL_FILE, SERVING_SIGNATURE
from cgan_ct.errors import InputError
from cgan_ct.model.export import save_serving_model
from cgan_ct.ops.intensity import IntensityMapping
from cgan_ct.synthesis.calibration import Calibration
from cgan_ct.synthesis.coarse_networks import LATENT_SIZE, broadcast_position, draw_noise, positions

COARSE_INFO = COARSE_INFO_FILE
_WARMUP_DEPTH = 4  # slices of the warmup request


class CoarseModule:
    """The coarse generator with its intensity mapping as the signature ``generate(seed int64 [2], depth int32 [])``
    -> {"volume_hu": float32 [depth, S, S]}, reproducible for a seed; also served as serving_default.
    With ``calibration``, the HU it serves are calibrated."""

    def __init__(
        self,
        generator: keras.Model,
        mapping: IntensityMapping,
        config: CoarseConfig,
        calibration: Calibration | None = None,
    ):
        self.generator, self.mapping, self.config = generator, mapping, config
        self.calibration = calibration

    def endpoints(self) -> dict[str, tuple]:
        """Signature name -> (function, input signature)."""
        return {COARSE_SIGNATURE: (self._generate, [tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int32)])}

    def warmup_inputs(self) -> dict:
        """One serving_default request: a few slices of a fixed seed."""
        return {"seed": np.array([0, 0x5EED], np.int64), "depth": np.array(_WARMUP_DEPTH, np.int32)}

    def draw(self, seed: int, depth: int) -> np.ndarray:
        """One volume, eagerly (as ``generate`` serves it): float32 HU [depth, S, S]."""
        out = self._generate(tf.constant([seed, 0x5EED], tf.int64), tf.constant(depth, tf.int32))
        return out["volume_hu"].numpy()

    def _generate(self, seed, depth):
        check = tf.debugging.assert_positive(depth, "depth must be at least 1 slice")
        with tf.control_dependencies([check]):
            code, latent = draw_noise(seed, 1, depth, self.config.latent_channels)
        position = broadcast_position(positions(depth)[None], LATENT_SIZE)
        volume = self.generator([code, latent, position], training=False)[0, ..., 0]
        volume_hu = self.mapping.inverse_tf(volume)
        if self.calibration is not None:
            volume_hu = self.calibration.apply_tf(volume_hu)
        return {"volume_hu": volume_hu}


def save_coarse_model(
    generator: keras.Model,
    mapping: IntensityMapping,
    config: CoarseConfig,
    output_dir,
    info: dict | None = None,
    calibration: Calibration | None = None,
) -> pathlib.Path:
    """Writes the coarse generator as a SavedModel folder (signature ``generate``, also serving_default), atomically;
    with ``calibration``, the signature serves calibrated HU."""
    served = CoarseModule(generator, mapping, config, calibration)
    signatures = [COARSE_SIGNATURE, SERVING_SIGNATURE]
    record = {**(info or {}), "size": config.size, "intensity": mapping.to_json(), "signatures": signatures}
    record["calibration"] = calibration.to_json() if calibration is not None else None
    return save_serving_model(generator, served.endpoints(), served.warmup_inputs(), output_dir, COARSE_INFO, record)


class CoarseModel:
    """A saved coarse generator: ``draw(seed, depth)`` -> float32 HU [depth, S, S] (calibrated where it was saved
    with a calibration: ``calibration``, None otherwise and for models saved before calibrations)."""

    def __init__(self, model_dir):
        model_dir = pathlib.Path(model_dir)
        if not (model_dir / COARSE_INFO).exists() or not (model_dir / SAVED_MODEL_FILE).exists():
            raise InputError(model_dir, f"not a coarse generator saved by cgan-ct (no {COARSE_INFO})")
        self.info = json.loads((model_dir / COARSE_INFO).read_text())
        self._generate = tf.saved_model.load(str(model_dir)).signatures[COARSE_SIGNATURE]
        self.size = int(self.info["size"])
        recorded = self.info.get("calibration")
        self.calibration = Calibration.from_json(recorded) if recorded else None

    def draw(self, seed: int, depth: int) -> np.ndarray:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        out = self._generate(seed=tf.constant([seed, 0x5EED], tf.int64), depth=tf.constant(depth, tf.int32))
        return out["volume_hu"].numpy()
