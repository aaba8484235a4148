"""The record of one GAN step that the metric trackers read; its own module so that both train steps
(TensorFlow's in cgan_ct.model.gan, JAX's in cgan_ct.model.jax_steps) import it without importing each other."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """What one step measured, for the metric trackers (``ConditionalGAN.update_metrics``): the batch, G's
    output, D's logits on real and generated blocks, and the losses as the step computed them."""

    condition: object
    target: object
    generated: object
    real_logits: object
    fake_logits: object
    d_loss: object
    g_total: object
    g_adversarial: object
    g_l1: object
