"""Training the coarse GAN (cgan_ct.synthesis.coarse_networks) on coarse crops of the training volumes.

The discriminator sees real and generated volumes through the same random
translation and cutout (differentiable augmentation), with a lazy R1 penalty
on its gradient at real volumes; see coarse_networks for why.

With ``CoarseConfig.ema_decay`` the GAN also keeps a moving average of the
generator's weights (``CoarseGAN.sampler``): on six bodies the generator
hops from one body to another between checks (MS-SSIM between draws 0.50,
0.78, 0.34 ... 0.92 over 3,000 steps at seed 2), and an average over many
steps is what the GAN literature uses against such cycling (ProGAN, StyleGAN;
Yazici et al. 2019, "The unusual effectiveness of averaging in GAN training").
Measured at two seeds (BUILD_NOTES, "A moving average of the coarse
generator"): the average's body HU and bone share are steadier, but where G
settles on one body (seed 2, from step 2,100) the average follows it.

With ``CoarseConfig.mode_seeking`` the generator is also pushed, at every
step, to draw different bodies from different codes: MSGAN's mode-seeking
term (Mao et al. 2019, "Mode seeking generative adversarial networks for
diverse image synthesis"), on pairs of draws at the same slice heights, the
volumes compared at body scale (``MODE_SEEKING_POOL``) so that noise alone
cannot meet it. MSGAN's ratio rewards any difference, however large; with
``CoarseConfig.mode_seeking_bounded`` the term is a hinge at the distance
between real bodies (``real_pair_distance``), so that a generator whose draws
already differ as patients do is not pushed further.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from scipy import ndimage

from cgan_ct.config import CoarseConfig
from cgan_ct.data.augment import ELASTIC_GRID, cosine_weights
from cgan_ct.model import losses
from cgan_ct.model.gan import warmed_decay
from cgan_ct.ops.intensity import IntensityMapping
from cgan_ct.synthesis.coarse_networks import (
    LATENT_SIZE,
    broadcast_position,
    build_coarse_discriminator,
    build_coarse_generator,
    draw_noise,
)

COLOR_BRIGHTNESS = 0.2  # augment_color: +U[-0.2, 0.2] (about 400 HU in the linear window) ...
COLOR_CONTRAST = 0.2  # ... and x U[0.8, 1.2] about each volume's mean
MODE_SEEKING_POOL = 4  # the mode-seeking term compares volumes' in-plane means of 4 x 4 voxels (32 mm at 64 x 64)
MODE_SEEKING_EPSILON = 1e-5  # MSGAN's
MODE_SEEKING_QUANTILE = 0.1  # the bounded term's target: this quantile of the real pairs' distances ...
MODE_SEEKING_REAL_PAIRS = 512  # ... over this many pairs of augmented crops


def pair_distance(first, second, pool: int = MODE_SEEKING_POOL):
    """Body-scale distance per pair: the mean absolute difference of two volumes' (each [N, D, S, S, 1])
    in-plane means over ``pool`` x ``pool`` squares (voxel noise does not count) -> [N]."""
    window = [1, 1, pool, pool, 1]
    means = [tf.nn.avg_pool3d(tf.convert_to_tensor(v, tf.float32), window, window, "VALID") for v in (first, second)]
    return tf.reduce_mean(tf.abs(means[0] - means[1]), axis=[1, 2, 3, 4])


def mode_seeking_loss(volumes, code, pool: int = MODE_SEEKING_POOL):
    """MSGAN's mode-seeking term, to minimize: the mean over pairs (draw i, draw i + B/2) of
    1 / (d_volume / d_code + epsilon).

    volumes [B, D, S, S, 1], code [B, C] (B even); d_volume: the mean absolute difference of the two
    volumes' in-plane means over ``pool`` x ``pool`` squares (body scale: voxel noise does not count),
    d_code: the mean absolute difference of their codes. Small when different codes draw different bodies;
    large when the generator draws one body whatever its code (mode collapse).
    """
    half = tf.shape(volumes)[0] // 2
    d_volume = pair_distance(volumes[:half], volumes[half : 2 * half], pool)
    d_code = tf.reduce_mean(tf.abs(code[:half] - code[half : 2 * half]), axis=1)
    return tf.reduce_mean(1.0 / (d_volume / d_code + MODE_SEEKING_EPSILON))


def bounded_mode_seeking_loss(volumes, target: float, pool: int = MODE_SEEKING_POOL):
    """The bounded mode-seeking term, to minimize: the mean over pairs (draw i, draw i + B/2) of
    max(0, 1 - d_volume / ``target``), d_volume as in ``mode_seeking_loss``. 1 for identical pairs, 0 for pairs
    at least ``target`` apart (no push beyond it)."""
    half = tf.shape(volumes)[0] // 2
    d_volume = pair_distance(volumes[:half], volumes[half : 2 * half], pool)
    return tf.reduce_mean(tf.nn.relu(1.0 - d_volume / target))


def real_pair_distance(
    volumes_norm: list[np.ndarray],
    config: CoarseConfig,
    seed: int,
    per_hu: float,
    pairs: int = MODE_SEEKING_REAL_PAIRS,
    quantile: float = MODE_SEEKING_QUANTILE,
) -> float:
    """The ``quantile`` of ``pair_distance`` between crops of two different training volumes (in [-1, 1]) at the
    same relative heights, each augmented as the discriminator's real crops are: how far apart real bodies are."""
    if len(volumes_norm) < 2:
        raise ValueError(
            f"the bounded mode-seeking term measures pairs of different training volumes: needs 2 or more, "
            f"got {len(volumes_norm)}"
        )
    rng = np.random.default_rng(seed)
    crop = config.crop_depth
    first, second = [], []
    for _ in range(pairs):
        height = rng.uniform()
        for index, out in zip(rng.choice(len(volumes_norm), 2, replace=False), (first, second), strict=True):
            v = volumes_norm[index]
            start = int(round(height * max(0, len(v) - crop)))
            out.append(_augment_crop(_padded(v, crop)[start : start + crop], config, rng, per_hu))
    distances = pair_distance(np.stack(first)[..., None], np.stack(second)[..., None]).numpy()
    return float(np.quantile(distances, quantile))


def augment_for_discriminator(volumes, seed, max_shift: int, cutout: int, color: bool = False):
    """Random in-plane translation (air fills what moves in) and a cutout square, per example.

    volumes [B, D, S, S, 1] in [-1, 1]; shifts in [-max_shift, max_shift];
    the cutout (a cutout x cutout square through all slices) is set to 0.
    ``color``: first a random brightness and contrast change per example (DiffAugment's colour, for one channel).
    """
    batch, size = tf.shape(volumes)[0], volumes.shape[2]
    seed = tf.cast(seed, tf.int64)
    shift_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))  # as before colour existed
    color_seed = tf.random.experimental.stateless_fold_in(seed, 3)
    shifts = tf.random.stateless_uniform([batch, 2], shift_seed, -max_shift, max_shift + 1, dtype=tf.int32)
    out = volumes
    if color:
        change = tf.random.stateless_uniform([batch, 2, 1, 1, 1, 1], color_seed, -1.0, 1.0)
        mean = tf.reduce_mean(out, axis=[1, 2, 3, 4], keepdims=True)
        out = (out - mean) * (1.0 + COLOR_CONTRAST * change[:, 1]) + mean + COLOR_BRIGHTNESS * change[:, 0]
    for axis in (2, 3):
        index = tf.range(size)[None] - shifts[:, axis - 2 : axis - 1]  # [B, S]
        inside = (index >= 0) & (index < size)
        moved = tf.gather(out, tf.clip_by_value(index, 0, size - 1), axis=axis, batch_dims=1)
        mask = inside[:, None, :, None, None] if axis == 2 else inside[:, None, None, :, None]
        out = tf.where(mask, moved, -1.0)
    corner = tf.random.stateless_uniform([batch, 2], cut_seed, 0, size - cutout + 1, dtype=tf.int32)
    grid = tf.range(size)[None]
    rows = (grid >= corner[:, :1]) & (grid < corner[:, :1] + cutout)
    cols = (grid >= corner[:, 1:]) & (grid < corner[:, 1:] + cutout)
    hole = rows[:, None, :, None, None] & cols[:, None, None, :, None]
    return tf.where(hole, 0.0, out)


class CoarseGAN(keras.Model):
    """Trains the coarse generator against its discriminator (non-saturating loss)."""

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        config: CoarseConfig,
        seed=0,
        mode_seeking_target: float | None = None,
        **kw,
    ):
        """``mode_seeking_target``: the bounded mode-seeking term's distance (``real_pair_distance``), needed with
        ``config.mode_seeking_bounded``."""
        super().__init__(**kw)
        if config.mode_seeking_bounded and not (mode_seeking_target and mode_seeking_target > 0):
            raise ValueError(f"the bounded mode-seeking term needs a positive target, got {mode_seeking_target}")
        self.generator, self.discriminator, self.config = generator, discriminator, config
        self.mode_seeking_target = mode_seeking_target if config.mode_seeking_bounded else None
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.augment_seed = keras.random.SeedGenerator(seed + 1)
        # the mode-seeking term's second draws: their own stream, so that G's and D's draws are as without it
        self.partner_seed = keras.random.SeedGenerator(seed + 2) if config.mode_seeking else None
        names = ("d_loss", "g_loss", "r1", "real_score") + (("mode_seeking",) if config.mode_seeking else ())
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.average = None
        if config.ema_decay > 0:
            self.average = keras.models.clone_model(generator)
            self.average.set_weights(generator.get_weights())
            self.average.trainable = False
            # (average, G's) pairs of G's trainable weights; the clone's weights come in G's order
            self._averaged = [
                (a, w) for a, w in zip(self.average.weights, generator.weights, strict=True) if w.trainable
            ]
        self.built = True

    @property
    def sampler(self) -> keras.Model:
        """The generator that draws, is checked and is saved: the moving average of G's weights where
        ``config.ema_decay`` keeps one, else G itself."""
        return self.generator if self.average is None else self.average

    def compile(self, *, d_optimizer, g_optimizer, **kw):
        """By keyword, in the Keras guides' order: ``compile(d_optimizer=..., g_optimizer=...)``."""
        super().compile(optimizer=None, **kw)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def metrics(self):
        return list(self.trackers.values())

    def generate(self, position, training=False, seed=None):
        """position [B, D] -> (volumes [B, D, S, S, 1], their codes [B, C]) with fresh noise (from
        ``seed``, a SeedGenerator: the GAN's own by default)."""
        batch, depth = tf.shape(position)[0], tf.shape(position)[1]
        seed = self.noise_seed if seed is None else seed
        code, latent = draw_noise(seed.next(), batch, depth, self.config.latent_channels)
        return self.generator([code, latent, broadcast_position(position, LATENT_SIZE)], training=training), code

    def _discriminate(self, volumes, position):
        if self.config.augment:
            size = self.config.size
            volumes = augment_for_discriminator(
                volumes, self.augment_seed.next(), size // 8, size // 4, self.config.augment_color
            )
        return self.discriminator([volumes, position], training=True)

    def _r1(self, volumes, position):
        """Mean over the batch of the squared gradient norm of D's mean logit at real volumes.

        The mean over D's patches (its loss averages them): a sum would scale
        the penalty with the number of patches, and silence D.
        """
        with tf.GradientTape() as tape:
            tape.watch(volumes)
            total = tf.reduce_sum(tf.reduce_mean(self._discriminate(volumes, position), axis=[1, 2, 3, 4]))
        slopes = tape.gradient(total, volumes)
        return tf.reduce_mean(tf.reduce_sum(tf.square(slopes), axis=[1, 2, 3, 4]))

    def train_step(self, data):
        volumes, position = data
        batch = tf.shape(volumes)[0]
        full_position = broadcast_position(position, self.config.size)
        with tf.GradientTape() as g_tape:
            fake, code = self.generate(position, training=True)
            with tf.GradientTape() as d_tape:
                real_logits = self._discriminate(volumes, full_position)
                fake_logits = self._discriminate(tf.stop_gradient(fake), full_position)
                d_loss = losses.discriminator_loss(real_logits, fake_logits, batch)
                # lazy R1 (StyleGAN2): every r1_every-th step, weighted by r1_every
                every = self.config.r1_every
                r1 = tf.cond(
                    self.d_optimizer.iterations % every == 0,
                    lambda: self._r1(volumes, full_position),
                    lambda: tf.zeros([]),
                )
                d_loss += 0.5 * self.config.r1_gamma * every * r1
            d_vars = self.discriminator.trainable_variables
            self.d_optimizer.apply(d_tape.gradient(d_loss, d_vars), d_vars)
            g_loss = losses.generator_adversarial_loss(self._discriminate(fake, full_position), batch)
            g_total = g_loss
            if self.config.mode_seeking:
                # each of the first half's draws beside a second draw at its heights, which D never sees
                # (pairs of D's own batch would share heights that real batches do not, and D could tell)
                half = batch // 2
                partner, partner_code = self.generate(position[:half], training=True, seed=self.partner_seed)
                pairs = tf.concat([fake[:half], partner], axis=0)
                if self.mode_seeking_target is None:
                    mode_seeking = mode_seeking_loss(pairs, tf.concat([code[:half], partner_code], axis=0))
                else:
                    mode_seeking = bounded_mode_seeking_loss(pairs, self.mode_seeking_target)
                g_total += self.config.mode_seeking * mode_seeking
                self.trackers["mode_seeking"].update_state(mode_seeking)
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply(g_tape.gradient(g_total, g_vars), g_vars)
        if self.average is not None:
            decay = warmed_decay(self.config.ema_decay, self.g_optimizer.iterations)
            for average, weight in self._averaged:
                average.assign(decay * average + (1.0 - decay) * weight)
        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["r1"].update_state(r1)
        self.trackers["real_score"].update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def crop_batches(volumes_norm: list[np.ndarray], config: CoarseConfig, seed: int, per_hu: float = 2 / 4095):
    """Endless (volumes [B, crop, S, S, 1], positions [B, crop]) batches of random z crops.

    ``volumes_norm``: coarse volumes [D_i, S, S] in [-1, 1]; shorter than the
    crop, they are padded with air (-1) above their last slice, whose
    positions then run past +1 (above the volume). With ``config.scale_augment``
    / ``elastic_augment`` / ``shift_augment_hu`` each crop is zoomed in-plane
    about its centre (air fills in) / deformed in-plane by a smooth random field /
    shifted by an HU offset (``per_hu``: the mapping's units per HU).
    """
    for v in volumes_norm:
        if v.ndim != 3 or v.shape[1:] != (config.size, config.size):
            raise ValueError(
                f"coarse training volume has shape {v.shape}; expected [slices, {config.size}, {config.size}]"
            )
    rng = np.random.default_rng(seed)
    crop = config.crop_depth
    while True:
        batch_volumes, batch_positions = [], []
        for index in rng.integers(0, len(volumes_norm), config.batch_size):
            depth = len(volumes_norm[index])
            start = int(rng.integers(0, max(1, depth - crop + 1)))
            batch_volumes.append(
                _augment_crop(_padded(volumes_norm[index], crop)[start : start + crop], config, rng, per_hu)
            )
            batch_positions.append(-1.0 + 2.0 * (np.arange(start, start + crop) + 0.5) / depth)
        yield np.stack(batch_volumes)[..., None].astype(np.float32), np.stack(batch_positions).astype(np.float32)


def _padded(volume: np.ndarray, crop: int) -> np.ndarray:
    """``volume`` [D, S, S] with air (-1) above its last slice up to ``crop`` slices (itself if deep enough)."""
    if len(volume) >= crop:
        return volume
    return np.concatenate([volume, np.full((crop - len(volume), *volume.shape[1:]), -1.0, np.float32)])


def _augment_crop(crop: np.ndarray, config: CoarseConfig, rng: np.random.Generator, per_hu: float) -> np.ndarray:
    """A training crop [D, S, S] in [-1, 1], zoomed, deformed and shifted as the config asks (a copy only if
    changed)."""
    if config.scale_augment:
        factor = 1.0 + rng.uniform(-config.scale_augment, config.scale_augment)
        centre = (np.array(crop.shape[1:]) - 1) / 2
        matrix = np.diag([1.0, 1 / factor, 1 / factor])
        offset = np.concatenate([[0.0], centre - centre / factor])
        crop = ndimage.affine_transform(crop, matrix, offset, order=1, mode="constant", cval=-1.0)
    if config.elastic_augment:
        crop = elastic_slices(crop, rng, config.elastic_augment)
    if config.shift_augment_hu:
        shift = rng.uniform(-config.shift_augment_hu, config.shift_augment_hu) * per_hu
        crop = np.clip(crop + np.where(crop > -1.0, shift, 0.0), -1.0, 1.0).astype(np.float32)
    return crop


def elastic_slices(crop: np.ndarray, rng: np.random.Generator, amplitude: float, grid: int = ELASTIC_GRID):
    """``crop`` [D, S, S] with every slice displaced by one smooth random in-plane field (at most
    ``amplitude`` voxels per axis; ``grid`` x ``grid`` control points), bilinear, air (-1) outside."""
    size = crop.shape[1]
    control = rng.uniform(-amplitude, amplitude, (2, grid, grid))
    weights = cosine_weights(size, grid)
    field = np.einsum("yi,xj,cij->cyx", weights, weights, control)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    coords = np.stack([yy + field[0], xx + field[1]])
    out = [ndimage.map_coordinates(s, coords, order=1, mode="constant", cval=-1.0) for s in crop]
    return np.stack(out).astype(np.float32)


def train_coarse(
    volumes_hu: list[np.ndarray],
    mapping: IntensityMapping,
    config: CoarseConfig,
    seed: int = 0,
    callbacks=None,
    verbose: int = 0,
    say=print,
) -> keras.Model:
    """Trains a coarse generator on ``volumes_hu`` (coarse-level [D, S, S] HU arrays); returns it (with
    ``config.ema_decay``: the moving average of its weights, ``CoarseGAN.sampler``). ``say`` tells what was
    measured before training (the bounded mode-seeking term's target)."""
    if not volumes_hu:
        raise ValueError("no coarse training volumes")
    keras.utils.set_random_seed(seed)
    volumes = [mapping.forward(v) for v in volumes_hu]
    spec = (
        tf.TensorSpec([config.batch_size, config.crop_depth, config.size, config.size, 1], tf.float32),
        tf.TensorSpec([config.batch_size, config.crop_depth], tf.float32),
    )
    per_hu = float(mapping.forward(np.array([100.0]))[0] - mapping.forward(np.array([0.0]))[0]) / 100
    dataset = tf.data.Dataset.from_generator(lambda: crop_batches(volumes, config, seed, per_hu), output_signature=spec)
    target = None
    if config.mode_seeking_bounded:
        target = real_pair_distance(volumes, config, seed + 3, per_hu)
        say(
            f"coarse: bounded mode-seeking term: pairs of draws pushed apart while closer than {target:.4f} at body "
            f"scale (the {MODE_SEEKING_QUANTILE:.0%} quantile of real pairs' distances)"
        )
    gan = CoarseGAN(build_coarse_generator(config), build_coarse_discriminator(config), config, seed, target)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1),
        g_optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1),
    )
    gan.fit(
        dataset.prefetch(2),
        epochs=1,
        steps_per_epoch=config.steps,
        callbacks=callbacks or [],
        verbose=verbose,
        shuffle=False,
    )
    return gan.sampler
