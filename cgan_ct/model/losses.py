"""GAN and L1 losses as pure functions, reduced replica-safely.

Each loss is a mean per example (over its voxels or patches), summed over the
local batch and divided by the *global* batch size, as
``tf.nn.compute_average_loss`` does: under a strategy, summing the replicas'
losses (which the optimizer does with their gradients) gives the mean over the
global batch, so lambda * L1 means the same on one GPU and on eight.

Logits are the discriminator's raw patch outputs.
"""

from __future__ import annotations

import tensorflow as tf


def _per_example_mean(values):
    return tf.reduce_mean(tf.reshape(tf.cast(values, tf.float32), [tf.shape(values)[0], -1]), axis=1)


def _reduce(per_example, global_batch_size):
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def _bce(logits, label: float):
    logits = tf.cast(logits, tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label), logits=logits)


def discriminator_loss(real_logits, fake_logits, global_batch_size, kind: str = "nonsaturating"):
    """D's loss: real patches toward 1, generated toward 0."""
    if kind == "nonsaturating":
        per_example = _per_example_mean(_bce(real_logits, 1.0)) + _per_example_mean(_bce(fake_logits, 0.0))
    elif kind == "least_squares":
        real, fake = tf.cast(real_logits, tf.float32), tf.cast(fake_logits, tf.float32)
        per_example = 0.5 * (_per_example_mean(tf.square(real - 1.0)) + _per_example_mean(tf.square(fake)))
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}")
    return _reduce(per_example, global_batch_size)


def generator_adversarial_loss(fake_logits, global_batch_size, kind: str = "nonsaturating"):
    """G's adversarial loss: -log D(G(Y, Z)) (non-saturating), or least squares toward 1."""
    if kind == "nonsaturating":
        per_example = _per_example_mean(_bce(fake_logits, 1.0))
    elif kind == "least_squares":
        per_example = 0.5 * _per_example_mean(tf.square(tf.cast(fake_logits, tf.float32) - 1.0))
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}")
    return _reduce(per_example, global_batch_size)


def l1_loss(target, generated, global_batch_size):
    """Mean absolute difference per block, averaged over the global batch."""
    return _reduce(
        _per_example_mean(tf.abs(tf.cast(target, tf.float32) - tf.cast(generated, tf.float32))), global_batch_size
    )


def generator_loss(
    fake_logits, target, generated, global_batch_size, l1_weight: float = 100.0, kind: str = "nonsaturating"
):
    """(total, adversarial, l1) with total = adversarial + l1_weight * l1."""
    adversarial = generator_adversarial_loss(fake_logits, global_batch_size, kind)
    l1 = l1_loss(target, generated, global_batch_size)
    return adversarial + l1_weight * l1, adversarial, l1
