"""The tf.data pipeline: TFRecord blocks -> (condition Y, target X) batches for one task.

Per element: decode the stored block (int16 HU with margin) -> augmented
(train) or centre (eval) 32^3 crop -> condition derived from the crop, in HU
(cgan_ct.ops.corruption) -> both mapped to [-1, 1] by the dataset's recorded
intensity mapping -> channel axis. Corruption is defined in HU (the Poisson
protocol is), so the intensity mapping comes last; the result is the same
pair the issue's order would give.

Training blocks are sampled by content: an "air" block (fewer than 1 % of its
voxels above -500 HU, cgan_ct.constants) is kept with probability ``air_keep``
(default 0.1), so the loss is spent on anatomy, not on the air around the
patient (26-38 % of a chest's blocks). The evaluation split keeps every block.

Randomness is stateless: each element gets a seed pair from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``, so a seed
gives the same sequence of batches in every run, and each epoch (each new
iteration of the dataset) gets fresh draws. The evaluation split derives its
seeds from the element index and the seed: identical at every iteration.

With ``augment_copies`` k > 1 an epoch is k passes over the blocks, each in its
own shuffled order, so a block's copies lie about an epoch / k apart, not side
by side in one batch; every copy still gets its own seed pair (its own crop,
turns, flips and corruption).
"""

from __future__ import annotations

import dataclasses
import pathlib

import tensorflow as tf

from cgan_ct.constants import AIR_BLOCK_FRACTION, CONTENT_HU, DEFAULT_AIR_KEEP
from cgan_ct.data import augment, schema
from cgan_ct.data.manifest import SPLITS, Manifest, load_manifest
from cgan_ct.errors import InputError
from cgan_ct.ops import corruption
from cgan_ct.ops.intensity import IntensityMapping
from cgan_ct.ops.pyramid import check_pyramid
from cgan_ct.tasks import task_spec


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Knobs of the pipeline beyond the required arguments.

    Attributes:
      augment_copies: augmented copies of each block per epoch (the paper: 34).
      max_rotation_deg: small rotations about z on top of 90-degree turns (0: off).
      mirror_axes: the axes (0 z, 1 y, 2 x) each mirrored with probability 1/2 in
        training (the paper's mirroring: all three); () keeps the body's handedness
        (any single mirror puts the heart on the right).
      quarter_turns: turn each training block by a random multiple of 90 degrees in
        the axial plane (a proper rotation: handedness kept, orientation not).
      elastic_voxels: elastic deformation of each training block, at most this
        many voxels per axis (augment.elastic_field; 0: off); uses the margin.
      elastic_sampling: how deformed blocks are read (augment.ELASTIC_SAMPLINGS):
        "trilinear" (smooths the noise) or "noise_preserving" (keeps its grain).
      peak: Poisson peak of the denoise task (lower: noisier).
      factor: down-sampling factor of the depixelate task.
      pyramid: how the depixelate task down-samples (cgan_ct.ops.pyramid): "subsample" (every
        factor-th voxel, the paper's) or "mean" (each cube's mean: a mean-pyramid cascade's stages).
      shuffle_buffer: records held for shuffling (one record: 221 KB at 48^3).
      cycle_length: shards read at once.
      air_keep: probability that a training block with (almost) no content
        is kept (1.0 keeps all blocks, as the paper did).
      condition_blur, condition_noise_hu, condition_shift: depixelate only, training
        only: the condition's kept samples blurred (Gaussian sigma, in samples) and
        noised (HU), and the condition shifted by up to ``condition_shift`` voxels
        per axis (cgan_ct.ops.corruption.depixelate); all 0: the plain condition.
        A synthesis cascade's stages train so, on degradations measured from its
        coarse generator (cgan_ct.synthesis.degradation).
      noise_scale_min: denoise and lowdose, training only: each block's condition
        noise (condition - block) is scaled by s drawn uniformly from
        [noise_scale_min, 1], so one model sees every noise level from s = 1 (the
        peak's, the stored dose's) down to s = noise_scale_min (0: the clean block,
        whose answer is itself). s scales the noise's standard deviation: Poisson
        peak P becomes P / s^2, a stored dose d becomes 1 / (1 + s^2 (1 / d - 1)).
        1.0 (default): the single level, as before issue 31.
    """

    augment_copies: int = 1
    max_rotation_deg: float = 0.0
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    quarter_turns: bool = True
    elastic_voxels: float = 0.0
    elastic_sampling: str = "trilinear"
    peak: float = corruption.DEFAULT_PEAK
    factor: int = corruption.DEFAULT_FACTOR
    pyramid: str = "subsample"
    shuffle_buffer: int = 512
    cycle_length: int = 16
    air_keep: float = DEFAULT_AIR_KEEP
    condition_blur: float = 0.0
    condition_noise_hu: float = 0.0
    condition_shift: int = 0
    noise_scale_min: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.noise_scale_min <= 1.0:
            raise ValueError(f"noise_scale_min must be in [0, 1], got {self.noise_scale_min}")
        if self.condition_blur < 0 or self.condition_noise_hu < 0 or self.condition_shift < 0:
            raise ValueError(
                "condition_blur, condition_noise_hu and condition_shift must be >= 0, got "
                f"{self.condition_blur}, {self.condition_noise_hu}, {self.condition_shift}"
            )
        check_pyramid(self.pyramid)
        if not 0.0 <= self.air_keep <= 1.0:
            raise ValueError(f"air_keep must be in [0, 1], got {self.air_keep}")
        if not set(self.mirror_axes) <= {0, 1, 2} or len(set(self.mirror_axes)) != len(self.mirror_axes):
            raise ValueError(f"mirror_axes must be distinct axes among 0, 1, 2, got {self.mirror_axes}")
        if self.elastic_voxels < 0:
            raise ValueError(f"elastic_voxels must be >= 0, got {self.elastic_voxels}")
        if self.elastic_sampling not in augment.ELASTIC_SAMPLINGS:
            raise ValueError(
                f"elastic_sampling must be one of {augment.ELASTIC_SAMPLINGS}, got {self.elastic_sampling!r}"
            )
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))  # a list from JSON
        if self.augment_copies < 1:
            raise ValueError(f"augment_copies must be >= 1, got {self.augment_copies}")


def _shard_files(dataset_dir: pathlib.Path, manifest: Manifest, split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = [s.name for s in manifest.splits[split].shards]
    if not names:
        raise InputError(dataset_dir, f"the {split} split has no shards")
    return [str(dataset_dir / name) for name in names]


def _decode_fn(manifest: Manifest, stored_condition: bool):
    """(record, seed) -> ({"hu"[, "condition_hu"]}, seed): int16 stored blocks."""
    stored = manifest.stored_size

    def decode(record, seed):
        parsed = schema.decode_block(record, stored, with_condition=stored_condition)
        return {k: parsed[k] for k in ("hu", "condition_hu") if k in parsed}, seed

    return decode


def _keep_fn(manifest: Manifest, air_keep: float):
    """(hu, seed) -> whether a training block is kept: always with content, with ``air_keep`` if air."""
    margin, block = manifest.margin, manifest.block_size

    def keep(element, seed):
        hu = element["hu"]
        centre = hu[margin : margin + block, margin : margin + block, margin : margin + block]
        content = tf.reduce_mean(tf.cast(centre > CONTENT_HU, tf.float32))
        draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1))
        return tf.logical_or(content >= AIR_BLOCK_FRACTION, draw < air_keep)

    return keep


def _pair_fn(manifest: Manifest, task: str, training: bool, options: PipelineOptions):
    """The per-element function: (stored blocks, seed) -> (condition, target), float32 [B, B, B, 1].

    A stored condition (task lowdose) gets the same crop, turns and flips as its block: the same
    stateless seed gives the same draws.
    """
    mapping = manifest.mapping
    block = manifest.block_size
    spec = task_spec(task)
    degrade = None
    if training and spec.factor_grid:  # the pixelated condition's degradations (a cascade stage's)
        degrade = (options.condition_blur, options.condition_noise_hu, options.condition_shift)
    scaled_noise = training and spec.noise and options.noise_scale_min < 1.0

    def crop(hu, augment_seed):
        if training:
            return augment.random_block(
                hu,
                augment_seed,
                block,
                options.max_rotation_deg,
                options.mirror_axes,
                options.quarter_turns,
                options.elastic_voxels,
                options.elastic_sampling,
            )
        return augment.center_crop(hu, block)

    def pair(element, seed):
        augment_seed, corrupt_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        target_hu = crop(element["hu"], augment_seed)
        if spec.stored_condition:
            condition_hu = crop(element["condition_hu"], augment_seed)
        else:
            condition_hu = corruption.make_condition(
                target_hu, task, corrupt_seed, options.peak, options.factor, degrade, options.pyramid
            )
        if scaled_noise:
            scale_seed = tf.random.experimental.stateless_fold_in(corrupt_seed, 7)
            scale = tf.random.stateless_uniform([], scale_seed, options.noise_scale_min, 1.0)
            condition_hu = target_hu + scale * (condition_hu - target_hu)
        condition = mapping.forward_tf(condition_hu)[..., None]
        target = mapping.forward_tf(target_hu)[..., None]
        return tf.ensure_shape(condition, [block] * 3 + [1]), tf.ensure_shape(target, [block] * 3 + [1])

    return pair


def _records(
    files: list[str],
    options: PipelineOptions,
    pipeline: tuple[int, int],
    shuffle_seed=None,
    reshuffle: bool = False,
    passes: tf.data.Dataset | None = None,
) -> tf.data.Dataset:
    """This input pipeline's serialized records for one epoch.

    ``pipeline``: (its index, the number of pipelines). ``shuffle_seed``: None reads in order
    (evaluation); else shards and records are shuffled with it, again at each iteration if
    ``reshuffle``. ``passes``: a dataset of seeds, one pass over the records for each, shuffled by it.
    """
    pipeline_id, pipelines = pipeline
    # Each input pipeline (worker) reads its own shards; with fewer shards than
    # pipelines, every pipeline reads all shards and keeps every n-th record.
    by_file = len(files) >= pipelines
    training = shuffle_seed is not None

    def one_pass(shuffle_seed, reshuffle: bool):
        if isinstance(shuffle_seed, tf.Tensor):
            # A pass's seed is a tensor here (traced inside flat_map), and TensorFlow's seed helper compares
            # the op seed with 0 in Python when the global seed is 0 (keras.utils.set_random_seed(0)): a
            # "symbolic tensor as a bool" error. This pass's shuffles are seeded by the pass's seed alone
            # (itself drawn from the pipeline's seed, and the global one where set): the graph gets none.
            tf.compat.v1.get_default_graph().seed = None
        shards = tf.data.Dataset.from_tensor_slices(files)
        if by_file:
            shards = shards.shard(pipelines, pipeline_id)
        if training:
            shards = shards.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
        records = shards.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(options.cycle_length, len(files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if not by_file:
            records = records.shard(pipelines, pipeline_id)
        if training:
            records = records.shuffle(options.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
        return records

    if passes is None:
        return one_pass(shuffle_seed, reshuffle)
    # reshuffling is the seeds' job: flat_map rebuilds a pass with the same shuffle at every iteration
    return passes.flat_map(lambda pass_seed: one_pass(pass_seed, False))


def make_dataset(
    dataset_dir,
    split: str,
    task: str,
    global_batch_size: int,
    seed: int = 0,
    options: PipelineOptions | None = None,
    input_context: tf.distribute.InputContext | None = None,
    epoch: int | None = None,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Batches of (condition Y, target X), float32 in [-1, 1], shape [B, 32, 32, 32, 1].

    Args:
      dataset_dir: a folder written by cgan-ct-convert.
      split: "train" (shuffled, augmented, drops the last partial batch) or
        "test" (in order, centre crops, fixed corruption).
      task: "autoencode", "denoise", "depixelate", or "lowdose" (the
        condition stored with each block: the dataset must have one).
      global_batch_size: batch over all replicas (the paper: 50).
      seed: seeds shuffling, augmentation and corruption.
      options: see PipelineOptions.
      input_context: from ``strategy.distribute_datasets_from_function``; the
        shards are divided among input pipelines, and B becomes the
        per-replica batch.

      epoch: for resumable training: the training split's order and draws
        then depend only on (seed, epoch), not on how often the dataset was
        iterated, so a restarted job can rebuild the epoch it stopped in.
      skip_batches: with ``epoch``, start that epoch after this many training
        steps. One input pipeline feeds every replica of its machine a batch
        of B per step (MirroredStrategy: all local devices; multi-worker: the
        worker's), so a step takes B x local replicas of its records.

    One pass over the dataset is one epoch; iterate it again (Keras fit does)
    for the next epoch, with fresh shuffling and augmentation draws.
    """
    spec = task_spec(task)  # ValueError for an unknown task
    options = options or PipelineOptions()
    dataset_dir = pathlib.Path(dataset_dir)
    manifest = load_manifest(dataset_dir)
    check_task_data(dataset_dir, manifest, task)
    files = _shard_files(dataset_dir, manifest, split)
    training = split == "train"
    batch = global_batch_size
    pipeline_id, pipelines, local_replicas = 0, 1, 1
    if input_context is not None:
        batch = input_context.get_per_replica_batch_size(global_batch_size)
        pipeline_id, pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
        local_replicas = input_context.num_replicas_in_sync // pipelines

    element_seed = seed * 1_000_003 + pipeline_id  # distinct streams per input pipeline
    fresh_each_pass = epoch is None
    if not fresh_each_pass:
        element_seed = element_seed * 10_007 + epoch
    if training:
        passes = None
        if options.augment_copies > 1:
            passes = tf.data.Dataset.random(seed=element_seed, rerandomize_each_iteration=fresh_each_pass)
            passes = passes.take(options.augment_copies)
        records = _records(files, options, (pipeline_id, pipelines), element_seed, fresh_each_pass, passes)
        seeds = tf.data.Dataset.random(seed=element_seed, rerandomize_each_iteration=fresh_each_pass).batch(2)
        paired = tf.data.Dataset.zip(records, seeds)
    else:
        records = _records(files, options, (pipeline_id, pipelines))
        paired = records.enumerate().map(lambda i, r: (r, tf.stack([tf.constant(element_seed, tf.int64), i])))
    decoded = paired.map(
        _decode_fn(manifest, spec.stored_condition), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if training:
        if options.air_keep < 1.0:
            decoded = decoded.filter(_keep_fn(manifest, options.air_keep))
        decoded = decoded.skip(skip_batches * batch * local_replicas)  # after the filter: what training saw
    pairs = decoded.map(
        _pair_fn(manifest, task, training, options), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return pairs.batch(batch, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def check_task_data(dataset_dir, manifest: Manifest, task: str) -> None:
    """InputError unless the dataset can train ``task``: lowdose needs a stored condition."""
    if task_spec(task).stored_condition and not manifest.condition:
        raise InputError(
            dataset_dir,
            f"stores no paired condition, which task {task} trains on: convert with "
            "--condition lowdose (simulated) or --condition_input LOW_DOSE_SERIES (real pairs)",
        )


def load_intensity(dataset_dir) -> IntensityMapping:
    """The dataset's intensity mapping, to turn model outputs back into HU."""
    return load_manifest(dataset_dir).mapping
