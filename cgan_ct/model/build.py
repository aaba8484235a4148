"""Building a compiled ConditionalGAN from a ModelConfig: networks, optimizers, dtype policy.

Imports no TensorFlow: the JAX backend (``KERAS_BACKEND=jax``) builds and trains the same models
where TensorFlow is not installed (benchmarks/gpu_jax_check.py).
"""

from __future__ import annotations

import keras

from cgan_ct.config import ModelConfig
from cgan_ct.model.gan import ConditionalGAN
from cgan_ct.model.networks import build_discriminator, build_generator
from cgan_ct.model.precision import Precision, dtype_policy, resolve_precision
from cgan_ct.ops.intensity import IntensityMapping


def make_optimizer(learning_rate: float, config: ModelConfig, total_steps: int | None, loss_scaling: bool = False):
    """Adam (beta_1 from the config), on a cosine schedule if asked, loss-scaled if asked (float16)."""
    if config.lr_schedule == "cosine":
        if not total_steps:
            raise ValueError("lr_schedule 'cosine' needs the run's total steps")
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=0.1)
    optimizer = keras.optimizers.Adam(learning_rate, beta_1=config.beta_1)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def build_gan(
    config: ModelConfig,
    seed: int = 0,
    hu_mapping: IntensityMapping | None = None,
    total_steps: int | None = None,
    precision: Precision | None = None,
) -> ConditionalGAN:
    """The compiled GAN with both optimizers built; call inside the strategy's scope (TensorFlow).

    ``hu_mapping`` (the dataset's) lets validation report PSNR in HU, by which the best checkpoint is
    chosen, and the L1 be taken in HU; ``total_steps`` is the length of a learning-rate schedule.
    ``precision`` is ``config.precision`` resolved (default: resolved here); the GAN keeps it as
    ``gan.precision``.
    """
    precision = precision or resolve_precision(config.precision)
    with dtype_policy(precision.policy):  # for these networks only: layers keep the policy they were built with
        gan = ConditionalGAN(build_generator(config), build_discriminator(config), seed=seed, hu_mapping=hu_mapping)
    gan.precision = precision
    gan.compile(
        d_optimizer=make_optimizer(config.d_learning_rate, config, total_steps, precision.loss_scaling),
        g_optimizer=make_optimizer(config.g_learning_rate, config, total_steps, precision.loss_scaling),
        l1_weight=config.l1_weight,
        spectral_weight=config.spectral_weight,
        spectral_patch=config.spectral_patch,
        adversarial=config.adversarial,
        l1_space=config.l1_space,
        ema_decay=config.ema_decay,
        # JAX runs eagerly without jit, op by op: there XLA is the backend's way of running at all
        jit_compile=True if keras.backend.backend() == "jax" else config.jit_compile,
    )
    # built here, inside the scope: built lazily by the first step, they fail under a strategy
    gan.g_optimizer.build(gan.generator.trainable_variables)
    gan.d_optimizer.build(gan.discriminator.trainable_variables)
    return gan
