"""GAN and L1 losses as pure functions, reduced replica-safely.

Each loss is a mean per example (over its voxels or patches), summed over the
local batch and divided by the *global* batch size, as
``tf.nn.compute_average_loss`` does: under a strategy, summing the replicas'
losses (which the optimizer does with their gradients) gives the mean over the
global batch, so lambda * L1 means the same on one GPU and on eight.

Logits are the discriminator's raw patch outputs. Written in ``keras.ops`` only,
so the TensorFlow and the JAX train steps compute the same numbers.
"""

from __future__ import annotations

from keras import ops


def _per_example_mean(values):
    values = ops.cast(values, "float32")
    return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def _reduce(per_example, global_batch_size):
    # tf.nn.compute_average_loss's arithmetic, in keras.ops (the same on the TensorFlow and JAX backends)
    return ops.sum(per_example) / ops.cast(global_batch_size, "float32")


def _bce(logits, label: float):
    """Sigmoid cross-entropy of ``logits`` against a constant label, in its overflow-free form."""
    logits = ops.cast(logits, "float32")
    return ops.maximum(logits, 0.0) - logits * label + ops.log1p(ops.exp(-ops.abs(logits)))


def discriminator_loss(real_logits, fake_logits, global_batch_size, kind: str = "nonsaturating"):
    """D's loss: real patches toward 1, generated toward 0."""
    if kind == "nonsaturating":
        per_example = _per_example_mean(_bce(real_logits, 1.0)) + _per_example_mean(_bce(fake_logits, 0.0))
    elif kind == "least_squares":
        real, fake = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
        per_example = 0.5 * (_per_example_mean(ops.square(real - 1.0)) + _per_example_mean(ops.square(fake)))
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}")
    return _reduce(per_example, global_batch_size)


def generator_adversarial_loss(fake_logits, global_batch_size, kind: str = "nonsaturating"):
    """G's adversarial loss: -log D(G(Y, Z)) (non-saturating), or least squares toward 1."""
    if kind == "nonsaturating":
        per_example = _per_example_mean(_bce(fake_logits, 1.0))
    elif kind == "least_squares":
        per_example = 0.5 * _per_example_mean(ops.square(ops.cast(fake_logits, "float32") - 1.0))
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}")
    return _reduce(per_example, global_batch_size)


def l1_loss(target, generated, global_batch_size):
    """Mean absolute difference per block, averaged over the global batch."""
    return _reduce(
        _per_example_mean(ops.abs(ops.cast(target, "float32") - ops.cast(generated, "float32"))), global_batch_size
    )


def generator_loss(
    fake_logits, target, generated, global_batch_size, l1_weight: float = 100.0, kind: str = "nonsaturating"
):
    """(total, adversarial, l1) with total = adversarial + l1_weight * l1."""
    adversarial = generator_adversarial_loss(fake_logits, global_batch_size, kind)
    l1 = l1_loss(target, generated, global_batch_size)
    return adversarial + l1_weight * l1, adversarial, l1
