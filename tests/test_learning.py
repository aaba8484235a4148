"""An honest learning test: CPU training on real chest CT beats the noisy condition on a held-out patient.

The shared chest series is cut into two slabs (slices 0-31 and 32-63), each a
"patient": one trains, the other is held out. The cpu preset trains on the
denoise task at Poisson peak 128 with the linear intensity window. Every
EVERY steps the generator is scored on the held-out slab (every block, centre
crops, fixed noise): its PSNR in HU (clipped to [-1024, 3071], range 4096)
must beat the noisy condition's by MARGIN_DB. Training stops as soon as it
does, so the test is sized by what it must show, not by a step count tuned on
one CPU; it fails if MAX_STEPS pass without it. Measured when written: see
BUILD_NOTES.md ("Test suite").
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cgan_ct import read_volume, write_nifti
from cgan_ct.config import ConversionConfig, model_config
from cgan_ct.data.conversion import convert
from cgan_ct.data.input_pipeline import PipelineOptions, load_intensity, make_dataset
from cgan_ct.model.export import load_run_generator
from cgan_ct.model.training import RunOptions, train

MARGIN_DB = 1.5
EVERY = 25
MAX_STEPS = 600


def _psnr_hu(a, b):
    return 10 * np.log10(4096.0**2 / np.mean((a - b) ** 2))


class HeldOutPsnr(keras.callbacks.Callback):
    """Scores the generator on the held-out blocks every ``every`` steps; stops once it beats the condition."""

    def __init__(self, dataset, mapping, every: int, margin_db: float):
        super().__init__()
        to_hu = lambda blocks: np.clip(mapping.inverse(np.concatenate(blocks)), -1024, 3071)  # noqa: E731
        self.batches = [
            (c, tf.random.stateless_uniform(tf.shape(c), [5, i], -1.0, 1.0)) for i, (c, _) in enumerate(dataset)
        ]
        self.to_hu, self.every, self.margin_db = to_hu, every, margin_db
        self.target = to_hu([t.numpy() for _, t in dataset])
        self.condition_db = _psnr_hu(to_hu([c.numpy() for c, _ in self.batches]), self.target)
        self.history, self.steps = [], 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every:
            return
        # what the run saves: with a moving average of the weights, that generator (evaluation_generate)
        generated = [self.model.evaluation_generate(c, z).numpy() for c, z in self.batches]
        self.history.append((self.steps, _psnr_hu(self.to_hu(generated), self.target)))
        if self.history[-1][1] >= self.condition_db + self.margin_db:
            self.model.stop_training = True


@pytest.mark.slow
def test_denoising_beats_the_noisy_condition_on_held_out_chest(shared_ct, tmp_path):
    volume = read_volume(shared_ct / "lung-pet-ct-dx-A0001")
    write_nifti(volume.replace(hu=volume.hu[:32].copy()), tmp_path / "lower.nii.gz")
    write_nifti(volume.replace(hu=volume.hu[32:].copy()), tmp_path / "upper.nii.gz")
    convert(
        [tmp_path / "lower.nii.gz", tmp_path / "upper.nii.gz"],
        tmp_path / "ds",
        ConversionConfig(test_fraction=0.5, intensity="linear"),
        workers=1,
    )
    options = PipelineOptions(peak=128.0)
    held_out = make_dataset(tmp_path / "ds", "test", "denoise", 16, options=options)
    score = HeldOutPsnr(held_out, load_intensity(tmp_path / "ds"), EVERY, MARGIN_DB)
    assert len(score.target) == 256  # every held-out block
    result = train(
        tmp_path / "ds",
        tmp_path / "run",
        # float32 on every machine: this measures the recipe; bfloat16's quality is experiments/recipe_ab.py's
        # A/B (not yet run on a CPU with AMX: BUILD_NOTES.md, "Precision")
        model_config("cpu", epochs=1, precision="float32"),
        RunOptions("denoise", steps_per_epoch=MAX_STEPS, pipeline=options, checkpoint_every=10**9, validation_steps=1),
        verbose=0,
        extra_callbacks=[score],
    )
    assert not result.diverged
    print(f"held-out PSNR: condition {score.condition_db:.2f} dB; model by step: {score.history}")
    steps, model_db = score.history[-1]
    assert model_db >= score.condition_db + MARGIN_DB, f"after {steps} steps: {model_db:.2f} dB"
    # the job's own output, written when training stopped, is the generator that was scored
    saved, _ = load_run_generator(tmp_path / "run", "last")
    generated = [saved([c, z], training=False).numpy() for c, z in score.batches]
    assert _psnr_hu(score.to_hu(generated), score.target) == pytest.approx(model_db, abs=0.01)
