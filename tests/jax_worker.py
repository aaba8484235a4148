"""The JAX side of tests/test_jax_backend.py, run as ``KERAS_BACKEND=jax python tests/jax_worker.py WORK``.

Keras picks its backend once per process, so the JAX half of every cross-backend check runs here, in one
process (one JAX start-up, one set of compilations), and leaves its results in WORK:

- ``losses.json``: the loss functions on the golden inputs of tests/test_gan.py (``loss_cases``);
- ``steps.json``: three train steps from WORK/init.weights.h5 on WORK/batch.npz with the noise fixed;
- ``steps_bn.json``: the same with batch normalization (D in two passes: ``joint_d_pass`` off) and a moving
  average of G's weights, from WORK/init_bn.weights.h5;
- ``run/``: a short cgan-ct-train run on WORK/dataset (``train()``; data-parallel when the test gives the
  process two host devices: ``devices.json``), and ``run_outputs.npy``: its
  best generator on WORK/probe.npz, as JAX computes it.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def loss_cases(ops, losses) -> dict:
    """The golden inputs of tests/test_gan.py, in keras.ops (either backend)."""
    zeros, confident = ops.zeros((2, 4, 4, 4, 1)), ops.full((2, 4, 4, 4, 1), 10.0)
    ones3, zeros3 = ops.ones((3, 2, 2, 2, 1)), ops.zeros((3, 2, 2, 2, 1))
    generated = ops.concatenate([ops.full((1, 4, 4, 4, 1), 0.5), ops.full((1, 4, 4, 4, 1), -0.25)], axis=0)
    total, adversarial, l1 = losses.generator_loss(ops.zeros((2, 2, 2, 2, 1)), zeros, generated, 2, l1_weight=100.0)
    # a checkerboard in every axial plane: all its power at the highest in-plane frequency, the fourth band
    checker = ops.convert_to_tensor(
        np.broadcast_to(0.5 * (-1.0) ** np.add.outer(np.arange(4), np.arange(4)), (2, 4, 4, 4))
    )
    values = {
        "d_zero": losses.discriminator_loss(zeros, zeros, 2),
        "g_zero": losses.generator_adversarial_loss(zeros, 2),
        "g_confident": losses.generator_adversarial_loss(confident, 2),
        "d_confident": losses.discriminator_loss(confident, -confident, 2),
        "d_ls_right": losses.discriminator_loss(ones3, zeros3, 3, "least_squares"),
        "d_ls_wrong": losses.discriminator_loss(zeros3, ones3, 3, "least_squares"),
        "g_ls": losses.generator_adversarial_loss(zeros3, 3, "least_squares"),
        "g_total": total,
        "g_adversarial": adversarial,
        "g_l1": l1,
        "spectral": losses.spectral_loss(ops.cast(checker[..., None], "float32"), zeros, 2),
    }
    return {name: float(value) for name, value in values.items()}


GOLDEN = {
    "d_zero": 2 * math.log(2.0),
    "g_zero": math.log(2.0),
    "g_confident": math.log1p(math.exp(-10)),
    "d_confident": 2 * math.log1p(math.exp(-10)),
    "d_ls_right": 0.0,
    "d_ls_wrong": 1.0,
    "g_ls": 0.5,
    "g_total": math.log(2.0) + 37.5,
    "g_adversarial": math.log(2.0),
    "g_l1": 0.375,
    # amplitude 0.5 at 1 of the 7 frequencies of band 4 in a 4 x 4 plane: sqrt(0.25 * 16 / 7); the mean over
    # the 3 bands a 4 x 4 plane has (no frequency in (0, 1/8])
    "spectral": 0.5 * math.sqrt(16 / 7) / 3,
}


def fixed_noise(gan, condition):
    """The same Z on both backends: a fixed function of the condition, instead of each backend's generator."""
    from keras import ops

    return ops.sin(7.0 * condition + 0.5)


def three_steps(gan, batch) -> list[dict]:
    """The logs of three train steps; the last also holds the sum of |moving average of G| where there is one."""
    logs = []
    for _ in range(3):
        result = gan.train_on_batch(batch["condition"], batch["target"], return_dict=True)
        logs.append({k: float(v) for k, v in result.items()})
    if gan.uses_ema:
        logs[-1]["ema_abs_sum"] = float(sum(np.abs(np.asarray(w.value, np.float64)).sum() for w in gan.ema_weights))
    return logs


def batch_norm_config(preset: str):
    """The cross-backend config with batch normalization and a moving average (issue 32: both steps honour
    ``joint_d_pass`` and update the average the same way)."""
    from cgan_ct.config import model_config

    return model_config(preset, dropout=0.0, normalization="batch", ema_decay=0.9)


def main(work: pathlib.Path) -> None:
    sys.path.insert(0, str(REPO))
    import keras
    from keras import ops

    from cgan_ct.config import model_config
    from cgan_ct.model import losses
    from cgan_ct.model.build import build_gan
    from cgan_ct.model.gan import ConditionalGAN
    from cgan_ct.model.training import RunOptions, train

    assert keras.backend.backend() == "jax", keras.backend.backend()
    (work / "losses.json").write_text(json.dumps(loss_cases(ops, losses)))

    config = model_config(json.loads((work / "config.json").read_text())["preset"], dropout=0.0)
    own_noise, ConditionalGAN.draw_noise = ConditionalGAN.draw_noise, fixed_noise
    gan = build_gan(config, seed=0)
    gan.load_weights(work / "init.weights.h5")
    (work / "steps.json").write_text(json.dumps(three_steps(gan, np.load(work / "batch.npz"))))
    gan = build_gan(batch_norm_config(json.loads((work / "config.json").read_text())["preset"]), seed=0)
    assert not gan.joint_d_pass
    gan.load_weights(work / "init_bn.weights.h5")
    (work / "steps_bn.json").write_text(json.dumps(three_steps(gan, np.load(work / "batch.npz"))))

    ConditionalGAN.draw_noise = own_noise  # the run trains as a user's would, with the backend's own noise
    options = RunOptions("denoise", steps_per_epoch=4, checkpoint_every=2)
    result = train(work / "dataset", work / "run", model_config("smoke"), options)
    # trained here from step 0: a run resumed at its end would return at once and save no generator
    assert result.steps == 4 and not result.diverged and result.message.startswith("finished"), result
    import jax

    devices = len(jax.devices())
    parallel = keras.distribution.distribution()
    assert devices < 2 or isinstance(parallel, keras.distribution.DataParallel), (devices, parallel)
    (work / "devices.json").write_text(json.dumps({"devices": devices, "data_parallel": parallel is not None}))
    generator = keras.saving.load_model(work / "run" / "generator_best.keras")
    probe = np.load(work / "probe.npz")
    np.save(work / "run_outputs.npy", np.asarray(generator([probe["condition"], probe["noise"]], training=False)))
    print("jax worker done", os.environ.get("KERAS_BACKEND"))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
