"""ConditionalGAN: the pix2pix-style training of G(Y, Z) against D(Y, X) as a keras.Model.

Data: (condition Y, target X) batches, float32 in [-1, 1], [B, N, N, N, 1].
Each train step draws the noise Z ~ U[-1, 1] from a keras.random.SeedGenerator,
updates D once, then G once (losses in cgan_ct.model.losses, reduced over the global
batch). Metrics: G total / adversarial / L1, D loss, mean D(real) and
D(fake) (sigmoid of the patch logits), PSNR of G(Y, Z) against X on the batch
(axial slices, values in [-1, 1], data range 2), and in evaluation also SSIM
(it cost 5 % of a CPU train step and guides nothing there) and, given the
dataset's intensity mapping, ``psnr_hu``: PSNR in HU by the project's protocol
(clipped to [-1024, 3071], data range 4096, slice-averaged), the number users
read and the one the best checkpoint is chosen by, and ``z_std_hu``: the
per-voxel standard deviation of G's output over noise draws (from two draws,
in HU), which says whether the generator uses Z at all (pix2pix generators
often learn to ignore it).

Options (``compile``): the L1 term on the normalized values or in HU
(``l1_space``); an exponential moving average of G's weights (``ema_decay``),
kept in non-trainable variables beside G, updated after each G step, and used
by evaluation and by ``export_generator`` (what checkpoints save).

``training_state`` (a TrainingState) counts the training steps itself: an
optimizer's ``iterations`` skips the steps a loss-scale optimizer (mixed
precision) drops for overflowing gradients. It also holds what a resume point
needs beyond the weights, saved in the same weights file: the random states and
the metric sums of the epoch so far (``capture_resume_state``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cgan_ct.constants import DATA_RANGE_HU
from cgan_ct.model import losses
from cgan_ct.model.block_metrics import block_psnr, block_psnr_hu, block_ssim, noise_std_hu
from cgan_ct.model.step_record import StepRecord
from cgan_ct.ops.intensity import IntensityMapping

_METRICS = ("g_total", "g_adversarial", "g_l1", "d_loss", "d_real", "d_fake", "psnr", "ssim", "psnr_hu", "z_std_hu")


def warmed_decay(decay: float, step):
    """A moving average's decay after ``step`` updates: ``decay``, warmed up as (1 + t) / (10 + t) (early
    weights, far from trained, fade fast)."""
    step = ops.cast(step, "float32")
    return ops.minimum(decay, (1.0 + step) / (10.0 + step))


def _on_jax() -> bool:
    return keras.backend.backend() == "jax"


class OptimizerPair:
    """What Keras' JAX trainer asks of ``model.optimizer``: one list of both optimizers' variables (D's, then G's).

    The JAX trainer passes ``model.optimizer.variables`` through each train step as state; the GAN's step
    updates the two optimizers' parts separately (cgan_ct.model.jax_steps).
    """

    built = True

    def __init__(self, d_optimizer, g_optimizer):
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def variables(self) -> list:
        return list(self.d_optimizer.variables) + list(self.g_optimizer.variables)


class TrainingState(keras.layers.Layer):
    """Variables a resume point needs beyond the networks and the optimizers, saved with them.

    ``steps``: training steps taken (int64), incremented by every train step, also one whose update
    the loss-scale optimizer skipped. ``rng``: [R, 2] int64, copies of the model's random states (noise
    and dropout seed generators). ``metric_sums``: [M, 2] float32, (total, count) of each metric
    tracker. The last two are copied in at a checkpoint (``ConditionalGAN.capture_resume_state``).
    """

    def __init__(self, rng_count: int, metric_count: int, **kwargs):
        super().__init__(**kwargs)

        def variable(name, shape, dtype, **kw):
            return self.add_weight(shape=shape, dtype=dtype, initializer="zeros", trainable=False, name=name, **kw)

        self.steps = variable("steps", (), "int64", aggregation="only_first_replica")  # each replica adds 1
        self.rng = variable("rng", (rng_count, 2), "int64")
        self.metric_sums = variable("metric_sums", (metric_count, 2), "float32")
        self.loaded = False
        self.built = True

    def load_own_variables(self, store):
        # weights saved before this layer existed (resume points before issue 18) have no entry for it
        self.loaded = bool(len(store.keys()))
        if self.loaded:
            super().load_own_variables(store)


class ConditionalGAN(keras.Model):
    """Trains ``generator`` (G(Y, Z)) and ``discriminator`` (D(Y, X)) together."""

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        seed: int = 0,
        hu_mapping: IntensityMapping | None = None,
        **kwargs,
    ):
        """``hu_mapping``: the dataset's intensity mapping; with it, evaluation also reports ``psnr_hu``."""
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.hu_mapping = hu_mapping
        self.l1_space, self.ema_decay, self.ema_weights = "normalized", 0.0, []  # compile() sets them
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in _METRICS}
        self.built = True  # both networks are built functional models
        # Instance or no normalization keeps examples independent inside D, so real and generated
        # blocks can go through D as one batch (one pass instead of two; the same logits).
        self.joint_d_pass = not any(
            isinstance(layer, keras.layers.BatchNormalization) for layer in discriminator.layers
        )
        self.training_state = TrainingState(len(self.random_states()), len(self.trackers), name="training_state")

    def compile(
        self,
        *,
        d_optimizer,
        g_optimizer,
        l1_weight: float = 100.0,
        spectral_weight: float = 0.0,
        spectral_patch: int = 0,
        adversarial: str = "nonsaturating",
        l1_space: str = "normalized",
        ema_decay: float = 0.0,
        **kw,
    ):
        """By keyword, in the Keras guides' order: ``compile(d_optimizer=..., g_optimizer=..., ...)``.

        ``l1_space="hu"`` needs ``hu_mapping``; ``ema_decay > 0`` creates the moving average (call inside
        the strategy's scope, as the optimizers are built).
        """
        super().compile(optimizer=None, **kw)  # two optimizers of our own; no default one to save
        if l1_space == "hu" and self.hu_mapping is None:
            raise ValueError("l1_space='hu' needs the dataset's intensity mapping (hu_mapping)")
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.l1_weight = l1_weight
        self.spectral_weight = float(spectral_weight)
        self.spectral_patch = int(spectral_patch)
        self.adversarial = adversarial
        self.l1_space = l1_space
        self.ema_decay = float(ema_decay)
        if _on_jax():  # the JAX trainer carries model.optimizer's variables through each step as state
            for optimizer, network in ((d_optimizer, self.discriminator), (g_optimizer, self.generator)):
                if not optimizer.built:
                    optimizer.build(network.trainable_variables)
            self.optimizer = OptimizerPair(d_optimizer, g_optimizer)
        if self.ema_decay > 0 and not self.ema_weights:
            # aggregation "mean": every replica assigns the same value in its replica context. Started from
            # a numpy copy: a variable made from another's read value can share its buffer on the CPU.
            self.ema_weights = [
                keras.Variable(np.array(w.numpy()), trainable=False, aggregation="mean", name=f"ema_{i}")
                for i, w in enumerate(self.generator.trainable_weights)
            ]

    @property
    def uses_ema(self) -> bool:
        return self.ema_decay > 0

    @property
    def steps_taken(self) -> int:
        """Training steps taken (with mixed precision, also those whose update was skipped)."""
        return int(np.asarray(self.training_state.steps.numpy()))

    def random_states(self) -> list:
        """The state variables of every seed generator: Z's, then the networks' (dropout)."""
        networks = [
            v
            for v in self.generator.non_trainable_variables + self.discriminator.non_trainable_variables
            if v.name == "seed_generator_state"
        ]
        return [self.noise_seed.state, *networks]

    def metric_sums(self) -> np.ndarray:
        """[M, 2]: (total, count) of each tracker, summed over replicas (call outside ``fit``'s steps)."""
        return np.array([[float(np.asarray(v.numpy())) for v in t.variables] for t in self.trackers.values()])

    def set_metric_sums(self, sums) -> None:
        """Continues the trackers from ``metric_sums()`` values (a resumed epoch's first part)."""
        for tracker, row in zip(self.trackers.values(), np.asarray(sums), strict=True):
            for variable, value in zip(tracker.variables, row, strict=True):
                variable.assign(value)

    def capture_resume_state(self, metric_sums=None) -> None:
        """Copies the random states (and ``metric_sums``, if given) into ``training_state`` before a save."""
        self.training_state.rng.assign(np.stack([np.asarray(v.numpy()) for v in self.random_states()]))
        if metric_sums is not None:
            self.training_state.metric_sums.assign(np.asarray(metric_sums, np.float32))

    def restore_random_states(self) -> None:
        """The random states from ``training_state``, as ``capture_resume_state`` left them before the save."""
        for variable, value in zip(self.random_states(), self.training_state.rng.numpy(), strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))

    def ema_decay_at(self, step):
        """The moving average's decay after ``step`` updates of G (``warmed_decay``)."""
        return warmed_decay(self.ema_decay, step)

    def update_ema(self, weights=None, step=None) -> None:
        """One update of the moving average of G's weights towards ``weights`` (default: G's trainable weights'
        values) at decay ``ema_decay_at(step)`` (default: G's optimizer's iterations). The JAX step passes the
        values and the step of its stateless scope."""
        weights = [w.value for w in self.generator.trainable_weights] if weights is None else weights
        decay = self.ema_decay_at(self.g_optimizer.iterations if step is None else step)
        for average, weight in zip(self.ema_weights, weights, strict=True):
            average.assign(decay * average + (1.0 - decay) * ops.cast(weight, average.dtype))

    def evaluation_generate(self, condition, noise):
        """G(Y, Z) as evaluation sees it: with the moving average of the weights when there is one."""
        if not self.uses_ema:
            return self.generator([condition, noise], training=False)
        outputs, _ = self.generator.stateless_call(
            [w.value for w in self.ema_weights],
            [w.value for w in self.generator.non_trainable_variables],
            [condition, noise],
            training=False,
        )
        return outputs

    def export_generator(self) -> keras.Model:
        """The generator to save: G itself, or a copy holding the moving average of its weights."""
        if not self.uses_ema:
            return self.generator
        copy = keras.models.clone_model(self.generator)
        copy.set_weights(self.generator.get_weights())
        for target, average in zip(copy.trainable_weights, self.ema_weights, strict=True):
            target.assign(average.value)
        return copy

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a model symbolically from a first batch it takes from the
        # iterator and reduces across replicas; ours is built at construction,
        # the reduce fails under MultiWorkerMirroredStrategy, and the batch
        # taken would be skipped by training. So: nothing to do.
        return

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        condition, noise = inputs
        return self.generator([condition, noise], training=training)

    def draw_noise(self, condition):
        """Z ~ U[-1, 1] shaped like ``condition``; a fresh, replica-distinct draw per step.

        On JAX the step sees the global batch (keras.distribution shards it), so one draw covers all devices.
        """
        if _on_jax():
            return keras.random.uniform(ops.shape(condition), -1.0, 1.0, dtype=condition.dtype, seed=self.noise_seed)
        import tensorflow as tf

        seed = tf.cast(self.noise_seed.next(), tf.int64)
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group
        seed = seed + tf.stack([tf.constant(0, tf.int64), tf.cast(replica, tf.int64) * 1_000_003])
        return tf.random.stateless_uniform(tf.shape(condition), seed, -1.0, 1.0, dtype=condition.dtype)

    # What a train step needs, shared by the TensorFlow step below and the JAX step (cgan_ct.model.jax_steps):
    # the global batch, D's and G's losses, D's logits on real and generated blocks (one pass or two), the
    # moving average (update_ema above) and the metric trackers. The JAX step uses nothing else of this class.

    @staticmethod
    def _replicas() -> int:
        """Replicas whose local batches make the global one (a tf.distribute strategy's; 1 on JAX)."""
        if _on_jax():
            return 1
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync

    def global_batch(self, condition):
        """The global batch the losses are reduced over: this replica's batch x replicas (1 on JAX)."""
        return ops.shape(condition)[0] * self._replicas()

    def discriminator_loss(self, real_logits, fake_logits, global_batch):
        return losses.discriminator_loss(real_logits, fake_logits, global_batch, self.adversarial)

    def generator_losses(self, fake_logits, target, generated, global_batch):
        """(total, adversarial, L1) of the generator; the L1 in HU / 2048 with ``l1_space="hu"`` (the spectral
        term too); the total includes ``spectral_weight`` x the spectral term (losses.spectral_loss)."""
        if self.l1_space == "hu":
            scale = DATA_RANGE_HU / 2.0  # a linear window over CLIP_HU then gives the normalized L1
            target = self.hu_mapping.inverse_ops(target) / scale
            generated = self.hu_mapping.inverse_ops(generated) / scale
        return losses.generator_loss(
            fake_logits,
            target,
            generated,
            global_batch,
            self.l1_weight,
            self.adversarial,
            self.spectral_weight,
            self.spectral_patch,
        )

    def real_and_fake_logits(self, condition, target, generated, training: bool = True, discriminator=None):
        """D's logits on (Y, X) and (Y, G): one pass over both batches where D's normalization keeps examples
        independent (``joint_d_pass``), else two (batch normalization: real and generated statistics apart).

        ``discriminator(inputs, training)``: how to run D (default: the model itself); the JAX step passes a
        stateless call that threads D's non-trainable state (batch statistics) through both passes.
        """
        run = discriminator or (lambda inputs, training: self.discriminator(inputs, training=training))
        if not self.joint_d_pass:
            return run([condition, target], training), run([condition, generated], training)
        both = run(
            [
                ops.concatenate([condition, condition], 0),
                ops.concatenate([target, ops.cast(generated, target.dtype)], 0),
            ],
            training,
        )
        return ops.split(both, 2, axis=0)

    def compute_losses(self, condition, target, noise, training: bool) -> StepRecord:
        """All losses and outputs for one batch with explicit noise, without updating anything: a StepRecord.

        The same loss functions as ``train_step``, which differs only in updating D
        before G's adversarial term is computed (with the updated D). Not training:
        G is the evaluation generator (the moving average of its weights, if any).
        """
        global_batch = self.global_batch(condition)
        if training:
            generated = self.generator([condition, noise], training=True)
        else:
            generated = self.evaluation_generate(condition, noise)
        real_logits, fake_logits = self.real_and_fake_logits(condition, target, generated, training)
        g_total, g_adv, g_l1 = self.generator_losses(fake_logits, target, generated, global_batch)
        d_loss = self.discriminator_loss(real_logits, fake_logits, global_batch)
        return StepRecord(condition, target, generated, real_logits, fake_logits, d_loss, g_total, g_adv, g_l1)

    @staticmethod
    def _apply(optimizer, scaled_loss, tape, variables):
        # the loss is scaled (mixed precision) inside the tape: scaling outside would cut the gradient
        optimizer.apply(tape.gradient(scaled_loss, variables), variables)

    def train_step(self, *args):
        """TensorFlow: ``train_step(data)`` with two gradient tapes; JAX: ``train_step(state, data)``, stateless
        (cgan_ct.model.jax_steps), in the same order: D's update, then G's against the updated D."""
        if _on_jax():
            from cgan_ct.model.jax_steps import jax_train_step

            return jax_train_step(self, *args)
        import tensorflow as tf

        (data,) = args
        condition, target, _ = keras.utils.unpack_x_y_sample_weight(data)
        noise = self.draw_noise(condition)
        global_batch = self.global_batch(condition)
        with tf.GradientTape() as g_tape:
            generated = self.generator([condition, noise], training=True)  # one forward pass of G
            with tf.GradientTape() as d_tape:
                real_logits, fake_logits = self.real_and_fake_logits(
                    condition, target, tf.stop_gradient(generated), training=True
                )
                d_loss = self.discriminator_loss(real_logits, fake_logits, global_batch)
                d_scaled = self.d_optimizer.scale_loss(d_loss)
            self._apply(self.d_optimizer, d_scaled, d_tape, self.discriminator.trainable_variables)
            g_logits = self.discriminator([condition, generated], training=True)  # D after its update
            g_total, g_adv, g_l1 = self.generator_losses(g_logits, target, generated, global_batch)
            g_scaled = self.g_optimizer.scale_loss(g_total)
        self._apply(self.g_optimizer, g_scaled, g_tape, self.generator.trainable_variables)
        if self.uses_ema:
            self.update_ema()
        self.training_state.steps.assign_add(1)
        record = StepRecord(condition, target, generated, real_logits, fake_logits, d_loss, g_total, g_adv, g_l1)
        return self.update_metrics(record, ssim=False)

    def test_step(self, *args):
        if _on_jax():
            from cgan_ct.model.jax_steps import jax_test_step

            return jax_test_step(self, *args)
        (data,) = args
        return self.evaluate_batch(data)

    def evaluate_batch(self, data):
        """The evaluation of one batch (updates the trackers, returns the logs): test_step's body."""
        condition, target, _ = keras.utils.unpack_x_y_sample_weight(data)
        out = self.compute_losses(condition, target, self.draw_noise(condition), training=False)
        extra = {}
        if self.hu_mapping is not None:
            extra["psnr_hu"] = block_psnr_hu(target, out.generated, self.hu_mapping)
            other = self.evaluation_generate(condition, self.draw_noise(condition))  # another Z
            extra["z_std_hu"] = noise_std_hu(out.generated, other, self.hu_mapping)
        return self.update_metrics(out, extra=extra)

    def update_metrics(self, record: StepRecord, ssim: bool = True, extra: dict | None = None) -> dict:
        """The trackers updated with one step's ``record`` (SSIM too when ``ssim``: evaluation) and ``extra``
        values; returns the logs (the trackers' means so far)."""
        # losses are fractions of the global mean on each replica; scale back to this replica's mean
        replicas = float(self._replicas())
        values = {
            "g_total": record.g_total * replicas,
            "g_adversarial": record.g_adversarial * replicas,
            "g_l1": record.g_l1 * replicas,
            "d_loss": record.d_loss * replicas,
            "d_real": ops.mean(ops.sigmoid(ops.cast(record.real_logits, "float32"))),
            "d_fake": ops.mean(ops.sigmoid(ops.cast(record.fake_logits, "float32"))),
            "psnr": block_psnr(record.target, record.generated),
        }
        if ssim:  # evaluation
            values["ssim"] = block_ssim(record.target, record.generated)
        values.update(extra or {})
        for name, value in values.items():
            self.trackers[name].update_state(value)
        results = {name: self.trackers[name].result() for name in values}
        if _on_jax():
            return results
        import tensorflow as tf

        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces multi-worker logs along axis 0, which fails on scalars
            # (tensorflow/tensorflow#72388); a shape-[1] log reduces to the scalar mean.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results
