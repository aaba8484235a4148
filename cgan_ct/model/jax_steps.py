"""ConditionalGAN's train and test steps on the JAX backend: stateless, as Keras' JAX trainer runs them.

Keras calls ``train_step(state, data)`` under ``jax.jit`` with ``state`` =
(trainable, non-trainable, optimizer, metric variables' values) and expects
``(logs, new_state)``. The step runs inside a ``keras.StatelessScope`` holding
that state, so the code shared with the TensorFlow step (noise from the GAN's
SeedGenerator, losses, the moving average, the metric trackers) reads and
writes values of the scope instead of variables; the networks run through
``stateless_call`` so that gradients are plain ``jax`` derivatives:

1. Z from the GAN's seed generator; G's forward pass once, kept as a
   ``jax.vjp`` (the TensorFlow step also runs G once, under its outer tape);
2. D's loss on (Y, X) and (Y, stop_gradient(G)) (one pass or two, as ``joint_d_pass`` says), its
   gradient, D's update;
3. G's loss through the *updated* D and the L1 term: its gradient with
   respect to G's output, pulled back through G's forward pass; G's update;
4. the moving average, the step counter and the trackers, as in TensorFlow.

``model.optimizer`` is an ``OptimizerPair``: its variables (D's, then G's)
are the state's optimizer part. Loss scaling (float16) goes through
``scale_loss`` / ``stateless_apply`` as in TensorFlow; bfloat16 needs none.
"""

from __future__ import annotations

import jax
import keras
from keras import ops

from cgan_ct.model.step_record import StepRecord


def _groups(gan, with_optimizer: bool = True) -> list:
    """The variable groups of Keras' JAX state, in its order: trainable, non-trainable, [optimizer], metrics."""
    groups = [gan.trainable_variables, gan.non_trainable_variables]
    groups += [gan.optimizer.variables] if with_optimizer else []
    return groups + [gan.metrics_variables]


def _state_mapping(groups, state) -> list:
    mapping = []
    for variables, values in zip(groups, state, strict=True):
        mapping += list(zip(variables, values, strict=True))
    return mapping


def _new_state(groups, scope) -> tuple:
    return tuple([scope.get_current_value(v) for v in variables] for variables in groups)


def _values(scope, variables) -> list:
    return [scope.get_current_value(v) for v in variables]


def _assign(variables, values) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _tensors(data):
    return keras.tree.map_structure(lambda x: None if x is None else ops.convert_to_tensor(x), data)


def jax_train_step(gan, state, data):
    """One training step of ``gan`` (a ConditionalGAN) on the JAX backend; returns (logs, new state).

    Uses only the GAN's train-step contract (``global_batch``, ``real_and_fake_logits``,
    ``discriminator_loss``, ``generator_losses``, ``update_ema``, ``update_metrics``), as the TensorFlow step
    does, so both honour ``joint_d_pass``: with batch normalization in D, real and generated blocks go
    through D in two passes, D's batch statistics threaded from one to the next.
    """
    condition, target, _ = keras.utils.unpack_x_y_sample_weight(_tensors(data))
    generator, discriminator = gan.generator, gan.discriminator
    groups = _groups(gan)
    with keras.StatelessScope(state_mapping=_state_mapping(groups, state)) as scope:
        noise = gan.draw_noise(condition)
        global_batch = gan.global_batch(condition)
        g_trainable = _values(scope, generator.trainable_variables)
        g_free = _values(scope, generator.non_trainable_variables)
        d_trainable = _values(scope, discriminator.trainable_variables)
        d_free = _values(scope, discriminator.non_trainable_variables)

        def g_forward(g_trainable):
            return generator.stateless_call(g_trainable, g_free, [condition, noise], training=True)

        generated, g_pullback, g_free = jax.vjp(g_forward, g_trainable, has_aux=True)

        def d_objective(trainable):
            run = _ThreadedCall(discriminator, trainable, d_free)
            real_logits, fake_logits = gan.real_and_fake_logits(
                condition, target, jax.lax.stop_gradient(generated), training=True, discriminator=run
            )
            loss = gan.discriminator_loss(real_logits, fake_logits, global_batch)
            return gan.d_optimizer.scale_loss(loss), (loss, real_logits, fake_logits, run.free)

        (_, (d_loss, real_logits, fake_logits, d_free)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            d_trainable
        )
        d_trainable, d_slots = gan.d_optimizer.stateless_apply(
            _values(scope, gan.d_optimizer.variables), d_grads, d_trainable
        )

        def g_objective(output):
            run = _ThreadedCall(discriminator, d_trainable, d_free)
            logits = run([condition, output], training=True)  # D after its update, as in TensorFlow
            total, adversarial, l1 = gan.generator_losses(logits, target, output, global_batch)
            return gan.g_optimizer.scale_loss(total), (total, adversarial, l1, run.free)

        (_, (g_total, g_adv, g_l1, d_free)), d_output = jax.value_and_grad(g_objective, has_aux=True)(generated)
        (g_grads,) = g_pullback(d_output)
        g_trainable, g_slots = gan.g_optimizer.stateless_apply(
            _values(scope, gan.g_optimizer.variables), g_grads, g_trainable
        )

        _assign(discriminator.trainable_variables, d_trainable)
        _assign(discriminator.non_trainable_variables, d_free)
        _assign(gan.d_optimizer.variables, d_slots)
        _assign(generator.trainable_variables, g_trainable)
        _assign(generator.non_trainable_variables, g_free)
        _assign(gan.g_optimizer.variables, g_slots)
        if gan.uses_ema:
            gan.update_ema(g_trainable, scope.get_current_value(gan.g_optimizer.iterations))
        gan.training_state.steps.assign_add(1)
        record = StepRecord(condition, target, generated, real_logits, fake_logits, d_loss, g_total, g_adv, g_l1)
        logs = gan.update_metrics(record, ssim=False)
    return logs, _new_state(groups, scope)


class _ThreadedCall:
    """A network's stateless call that carries its non-trainable state (batch statistics) from one call to
    the next, as the stateful call does: D called twice (real, then generated) updates its statistics twice."""

    def __init__(self, network, trainable, free):
        self.network, self.trainable, self.free = network, trainable, free

    def __call__(self, inputs, training):
        logits, self.free = self.network.stateless_call(self.trainable, self.free, inputs, training=training)
        return logits


def jax_test_step(gan, state, data):
    """One evaluation step on the JAX backend (no gradients: the TensorFlow code runs in the scope)."""
    groups = _groups(gan, with_optimizer=False)
    with keras.StatelessScope(state_mapping=_state_mapping(groups, state)) as scope:
        logs = gan.evaluate_batch(_tensors(data))
    return logs, _new_state(groups, scope)
