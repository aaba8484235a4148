"""The trained generator as a SavedModel for block inference.

Signatures (N = block size, blocks float32 [batch, N, N, N, 1]):
- serving_default(blocks_hu) -> {"blocks_hu"}: HU in, HU out; the dataset's
  intensity mapping is applied inside, the noise Z ~ U[-1, 1] drawn inside.
- generate_hu_seeded(blocks_hu, seed int64 [2]) -> {"blocks_hu"}: the same
  with reproducible noise.
- generate_normalized(condition, noise) -> {"generated"}: the bare
  generator on [-1, 1] values with explicit noise (for other runtimes).
``export_version`` writes it as ``BASE/<N>/`` (TF Serving's layout: integer
version folders, the highest served); ``resolve_model_dir`` loads either
layout. Next to it, ``cgan_ct_model.json`` records block size, task, intensity
mapping and model settings. The SavedModel needs TensorFlow only, not this
project.

Every SavedModel of the project (these, and the coarse synthesis model) is
written by ``save_serving_model`` through ``keras.export.ExportArchive``, so
that TF Serving and ``saved_model_cli`` (TF1 session loading) restore every
variable, not only ``tf.saved_model.load``; ``assets.extra/`` holds TF
Serving's warmup request (one block of the model's size to serving_default).

Every signature checks its blocks first, inside the graph, because neither a
reloaded signature nor TF Serving enforces the declared shape: a block that is
not [batch, N, N, N, 1] fails with InvalidArgumentError "blocks_hu must be
float32 [batch, N, N, N, 1] for this model (block size N); got shape] [...]", and
a NaN or Inf anywhere with "blocks_hu holds NaN or Inf" (``condition`` for
generate_normalized). A dtype other than float32 is refused by the runtime
("expected to be a float tensor"). Finite HU outside the intensity mapping's
range are clamped to it without a word, as a scanner's 12-bit range is: with
the mappings cgan-ct trains (equalized, or the default linear window) inputs
are clamped to [-1024, 3071] HU, so 1e6 HU is treated as 3071 HU, and outputs
lie in that range too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import uuid

import keras
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_pb2

from cgan_ct.config import LowDoseConfig, ModelConfig
from cgan_ct.constants import (
    AIR_HU,
    DEFAULT_FACTOR,
    DEFAULT_PEAK,
    GENERATOR_BEST,
    GENERATOR_LAST,
    MAX_SERVING_BATCH,
    MODEL_INFO_FILE,
    NORMALIZED_SIGNATURE,
    SAVED_MODEL_FILE,
    SEEDED_SIGNATURE,
    SERVING_SIGNATURE,
    WARMUP_FILE,
)
from cgan_ct.errors import InputError
from cgan_ct.io.atomic_files import TMP_PREFIX, failure_reason, sync_checked, write_failed
from cgan_ct.io.json_files import read_json_object, versioned_fields, write_json_atomic
from cgan_ct.model.run_record import RunRecord, model_settings_trained
from cgan_ct.ops.intensity import IntensityMapping
from cgan_ct.tasks import task_spec

MODEL_INFO = MODEL_INFO_FILE
MODEL_FORMAT_VERSION = 1
_WHAT = "model description"
_VARIABLES = "variables"  # the SavedModel's collection of the generator's variables: tf.saved_model.load(d).variables


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """``cgan_ct_model.json``: what an exported block generator does and on what values.

    ``intensity`` is the dataset's mapping (IntensityMapping.to_json); ``model``
    the ModelConfig as a dict (None for a model saved outside a training run);
    ``condition`` the corruption the model was trained on ({"peak", "factor"},
    and "pyramid" where it is not "subsample"; absent in models exported before
    it was recorded: the defaults), and for
    task lowdose the dataset's stored condition under "stored" (the simulated
    dose and its settings, or {"kind": "paired"} for real pairs).
    """

    block_size: int
    task: str
    intensity: dict
    model: dict | None = None
    checkpoint: str | None = None
    signatures: tuple[str, ...] = ()
    condition: dict | None = None
    format_version: int = MODEL_FORMAT_VERSION

    @property
    def mapping(self) -> IntensityMapping:
        return IntensityMapping.from_json(self.intensity)

    @property
    def peak(self) -> float:
        """The Poisson peak of the denoise condition the model was trained on."""
        return float((self.condition or {}).get("peak", DEFAULT_PEAK))

    @property
    def factor(self) -> int:
        """The pixelation factor of the depixelate condition the model was trained on."""
        return int((self.condition or {}).get("factor", DEFAULT_FACTOR))

    @property
    def pyramid(self) -> str:
        """How the depixelate condition the model was trained on down-samples (cgan_ct.ops.pyramid)."""
        return str((self.condition or {}).get("pyramid", "subsample"))

    @property
    def lowdose(self) -> LowDoseConfig | None:
        """The simulated low dose a lowdose model was trained on; None for other models and real pairs."""
        stored = (self.condition or {}).get("stored") or {}
        if stored.get("kind") != "lowdose":
            return None
        return LowDoseConfig(**{k: v for k, v in stored.items() if k != "kind"})

    @property
    def stored_condition(self) -> str | None:
        """ "lowdose" or "paired" for a model trained on a stored condition, else None."""
        return ((self.condition or {}).get("stored") or {}).get("kind")

    @classmethod
    def from_run(cls, run: RunRecord, checkpoint: str | None = None) -> ModelInfo:
        condition = {
            "peak": float(run.pipeline.get("peak", DEFAULT_PEAK)),
            "factor": int(run.pipeline.get("factor", DEFAULT_FACTOR)),
        }
        if run.pipeline.get("pyramid", "subsample") != "subsample":
            condition["pyramid"] = str(run.pipeline["pyramid"])
        if task_spec(run.task).stored_condition and run.condition:
            condition["stored"] = dict(run.condition)
        return cls(run.block_size, run.task, run.intensity, run.model, checkpoint, condition=condition)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict, path=None) -> ModelInfo:
        fields = versioned_fields(cls, data, path, _WHAT, MODEL_FORMAT_VERSION)
        fields["signatures"] = tuple(fields.get("signatures", ()))
        return cls(**fields)

    @classmethod
    def load(cls, model_dir) -> ModelInfo:
        path = pathlib.Path(model_dir) / MODEL_INFO_FILE
        return cls.from_json(read_json_object(path, _WHAT), path)

    def save(self, model_dir) -> pathlib.Path:
        return write_json_atomic(pathlib.Path(model_dir) / MODEL_INFO_FILE, self.to_json())


def is_exported_model(folder) -> bool:
    folder = pathlib.Path(folder)
    return (folder / MODEL_INFO_FILE).exists() and (folder / SAVED_MODEL_FILE).exists()


def versions(base_dir) -> list[int]:
    """The integer-named sub-folders of ``base_dir`` (TF Serving's version folders), ascending; [] if none."""
    base_dir = pathlib.Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(p.name) for p in base_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name.isascii())


def resolve_model_dir(model_dir) -> tuple[pathlib.Path, int | None]:
    """(SavedModel folder, version) for either layout.

    A folder that is an export itself comes back as it is, version None. A
    folder of integer version folders (``models/denoise/1/``, TF Serving's
    layout) gives its highest version, as TF Serving serves it; InputError if
    that one is not a complete export. Anything else comes back unchanged.
    """
    model_dir = pathlib.Path(model_dir)
    found = [] if is_exported_model(model_dir) else versions(model_dir)
    if not found:
        return model_dir, None
    folder = model_dir / str(found[-1])
    if not is_exported_model(folder):
        raise InputError(folder, "the highest version folder is not a model exported by cgan-ct-export")
    return folder, found[-1]


class BlockGenerator:
    """A generator with its intensity mapping as the three signatures; see the module docstring.

    ``endpoints()`` gives them for export; ``generate_hu_seeded`` runs one in memory (a training run's generator).
    """

    def __init__(self, generator: keras.Model, mapping: IntensityMapping, block_size: int):
        self.generator = generator
        self.mapping = mapping
        self.block_size = int(block_size)
        n = self.block_size
        self._blocks = tf.TensorSpec([None, n, n, n, 1], tf.float32)
        self._seed = tf.TensorSpec([2], tf.int64)
        # One function for the network, called by every signature: the SavedModel holds its graph once, not thrice.
        self._network = tf.function(self._generate, input_signature=[self._blocks, self._blocks])
        self.generate_hu_seeded = tf.function(self._generate_hu_seeded, input_signature=[self._blocks, self._seed])

    def endpoints(self) -> dict[str, tuple]:
        """Signature name -> (function, input signature), serving_default first."""
        return {
            SERVING_SIGNATURE: (self._generate_hu, [self._blocks]),
            SEEDED_SIGNATURE: (self._generate_hu_seeded, [self._blocks, self._seed]),
            NORMALIZED_SIGNATURE: (self._generate_normalized, [self._blocks, self._blocks]),
        }

    def warmup_inputs(self) -> dict:
        """One serving_default request: one block of air (-1024 HU), stored as one value and its shape."""
        n = self.block_size
        return {"blocks_hu": tf.make_tensor_proto(float(AIR_HU), tf.float32, [1, n, n, n, 1])}

    def _checked(self, blocks, name: str, normalized: bool = False):
        """``blocks`` once its shape is [batch, N, N, N, 1] with batch <= MAX_SERVING_BATCH, every value
        finite and, if ``normalized``, in [-1, 1]; else InvalidArgumentError naming what is wrong.

        Runtime checks: the signature's declared shape is only a trace-time
        promise, which a reloaded signature or TF Serving does not enforce.
        An empty batch gives an empty answer of the same shape.
        """
        n = self.block_size
        shape = tf.shape(blocks)
        padded = tf.concat([shape, tf.zeros([5], tf.int32)], 0)  # compares a tensor of any rank
        ok = tf.logical_and(tf.equal(tf.size(shape), 5), tf.reduce_all(tf.equal(padded[1:5], [n, n, n, 1])))
        message = f"{name} must be float32 [batch, {n}, {n}, {n}, 1] for this model (block size {n}); got shape"
        checks = [tf.debugging.Assert(ok, [message, shape], summarize=8)]
        batch_message = f"{name}: at most {MAX_SERVING_BATCH} blocks per request (split the batch); got"
        checks.append(tf.debugging.Assert(padded[0] <= MAX_SERVING_BATCH, [batch_message, padded[0]]))
        with tf.control_dependencies(checks):
            blocks = tf.debugging.assert_all_finite(blocks, f"{name} holds NaN or Inf")
        if not normalized:
            return blocks
        # empty: reduce_min/max are +-inf, which the [-1, 1] test would refuse
        low = tf.reduce_min(tf.concat([tf.reshape(blocks, [-1]), [-1.0]], 0))
        high = tf.reduce_max(tf.concat([tf.reshape(blocks, [-1]), [1.0]], 0))
        in_range = tf.logical_and(low >= -1.0, high <= 1.0)
        range_message = f"{name} must be normalized values in [-1, 1] (generate_hu takes HU); got min, max"
        with tf.control_dependencies([tf.debugging.Assert(in_range, [range_message, low, high])]):
            return tf.identity(blocks)

    def _generate(self, condition, noise):
        def run():
            return tf.cast(self.generator([condition, noise], training=False), tf.float32)

        # an empty batch would reach the network's reshapes with a 0 where they infer a dimension: the answer
        # came back with 4 or 8 channels; it is an empty batch of the input's shape
        return tf.cond(tf.shape(condition)[0] > 0, run, lambda: tf.zeros_like(condition))

    def _hu(self, blocks_hu, noise):
        generated = self._network(self.mapping.forward_tf(blocks_hu), noise)
        return {"blocks_hu": self.mapping.inverse_tf(generated)}

    def _generate_hu(self, blocks_hu):
        blocks_hu = self._checked(blocks_hu, "blocks_hu")
        return self._hu(blocks_hu, tf.random.uniform(tf.shape(blocks_hu), -1.0, 1.0))

    def _generate_hu_seeded(self, blocks_hu, seed):
        blocks_hu = self._checked(blocks_hu, "blocks_hu")
        return self._hu(blocks_hu, tf.random.stateless_uniform(tf.shape(blocks_hu), seed, -1.0, 1.0))

    def _generate_normalized(self, condition, noise):
        condition, noise = self._checked(condition, "condition", True), self._checked(noise, "noise", True)
        return {"generated": self._network(condition, noise)}


def generator_in_precision(generator: keras.Model, model: dict, policy: str = "float32") -> keras.Model:
    """``generator`` computing in the Keras dtype ``policy``: itself if every layer does already, else
    rebuilt from its settings ``model`` (a ModelConfig as a dict) under that policy, with its weights
    (float32 in every policy)."""
    from cgan_ct.model.networks import build_generator
    from cgan_ct.model.precision import dtype_policy

    names = {layer.dtype_policy.name for layer in generator.layers}
    mixed = {name for name in names if name.startswith("mixed_")}  # the output layers stay float32 in any
    if mixed == ({policy} if policy.startswith("mixed_") else set()):
        return generator
    with dtype_policy(policy):
        rebuilt = build_generator(ModelConfig(**model_settings_trained(model)))
    rebuilt.set_weights(generator.get_weights())
    return rebuilt


def load_run_generator(run_dir, checkpoint: str = "best", policy: str = "float32") -> tuple[keras.Model, RunRecord]:
    """The run's generator (built fresh, outside any strategy) and its run record.

    The generator computes in ``policy`` (Keras' dtype policy) whatever precision the run trained in:
    float32 unless asked, so that an export or an inference does not silently inherit bfloat16.
    """
    # The checkpoint names our layers (registered when their module is imported): a fresh process that
    # only serves (cgan-ct-export, cgan-ct-infer --model RUN_DIR) would not find them otherwise.
    from cgan_ct.model import networks  # noqa: F401

    run_dir = pathlib.Path(run_dir)
    run = RunRecord.load(run_dir)
    names = {"best": [GENERATOR_BEST, GENERATOR_LAST], "last": [GENERATOR_LAST]}[checkpoint]
    found = [run_dir / n for n in names if (run_dir / n).exists()]
    if not found:
        raise InputError(run_dir, "has no generator checkpoint yet (no finished epoch)")
    return generator_in_precision(keras.models.load_model(found[0], compile=False), run.model, policy), run


def generator_from_export(model_dir) -> keras.Model:
    """The generator of a block model exported by cgan-ct, rebuilt from its recorded settings with its saved weights.

    Reads exports of either writer: ``save_serving_model``'s (the variables as one collection) and the one
    before issue 36 (a tf.Module holding the Keras model, which TF Serving could not run), so that an old
    export can be written again: ``save_block_model(generator_from_export(old), ModelInfo.load(old), new)``.
    (The old writer kept no dropout seed state; a generator rebuilt from it draws new ones, unused at inference.)
    InputError for a model that records no settings (saved outside a training run).
    """
    from cgan_ct.model.networks import build_generator

    model_dir = pathlib.Path(model_dir)
    info = ModelInfo.load(model_dir)
    if not info.model:
        raise InputError(model_dir, "records no model settings to rebuild its generator from")
    generator = build_generator(ModelConfig(**model_settings_trained(info.model)))
    weights = str(model_dir / "variables" / "variables")
    names = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(weights)}
    if _VARIABLES in names:
        checkpoint = tf.train.Checkpoint(**{_VARIABLES: [v.value for v in generator.variables]})
    else:
        checkpoint = tf.train.Checkpoint(generator=generator)
    checkpoint.read(weights).assert_existing_objects_matched()
    return generator


def save_block_model(generator: keras.Model, info: ModelInfo, output_dir, overwrite: bool = False) -> pathlib.Path:
    """Saves ``generator`` with its intensity mapping as a SavedModel folder, atomically.

    ``info`` (block size, task, the dataset's intensity mapping) is written as
    cgan_ct_model.json beside the model, with the signature names.
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise InputError(output_dir, "exists and is not empty; not overwriting")
    served = BlockGenerator(generator, info.mapping, int(info.block_size))
    endpoints = served.endpoints()
    info = dataclasses.replace(info, signatures=tuple(sorted(endpoints)))
    return save_serving_model(generator, endpoints, served.warmup_inputs(), output_dir, MODEL_INFO, info.to_json())


def save_serving_model(
    generator: keras.Model, endpoints: dict, warmup_inputs: dict, output_dir, info_name: str, info: dict
) -> pathlib.Path:
    """Writes ``generator``'s ``endpoints`` as a SavedModel folder through keras.export.ExportArchive, atomically.

    ``endpoints``: signature name -> (function, input signature); the first is also
    served as serving_default unless one has that name. ``warmup_inputs``
    (input name -> array or TensorProto) is one serving_default request, written
    as TF Serving's warmup file; ``info`` is written as JSON file ``info_name``.
    Written beside ``output_dir`` under a temporary name, read back (graph,
    signatures, every variable, the warmup file) and moved into place only when
    complete, so a crash leaves the previous folder (or none), and a failed
    write (a full disk) raises InputError naming ``output_dir``.
    """
    output_dir = pathlib.Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f"{TMP_PREFIX}{output_dir.name}-{uuid.uuid4().hex[:8]}"
    try:
        archive = keras.export.ExportArchive()
        for name, (function, input_signature) in endpoints.items():
            archive.add_endpoint(name, function, input_signature)
        # The TensorFlow variables under the Keras ones, not archive.track(generator): tracking adds Keras'
        # variable wrappers, each of which writes a second handle that the graph's restore op never fills
        # (a TF1 loader, as TF Serving's, finds 29 of the smoke generator's 85 handles uninitialized).
        archive.add_variable_collection(_VARIABLES, [v.value for v in generator.variables])
        archive.write_out(str(tmp), verbose=False)
        write_warmup_requests(tmp, warmup_inputs)
        with open(tmp / info_name, "wb") as f:
            f.write(json.dumps(info, indent=1).encode())
            sync_checked(f, output_dir)
        _check_written(tmp, output_dir, endpoints)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    except (OSError, tf.errors.OpError) as exc:
        raise write_failed(output_dir, _write_failure(exc)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def _check_written(folder: pathlib.Path, output_dir: pathlib.Path, endpoints: dict) -> None:
    """Reads back what a server reads: TF raises on the failed writes seen so far, but its writers are not ours."""
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        model = saved_model_pb2.SavedModel.FromString((folder / SAVED_MODEL_FILE).read_bytes())
        found = set(model.meta_graphs[0].signature_def) if model.meta_graphs else set()
        reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)  # checks the tensor's length and CRC-32C
        warmup = sum(1 for _ in tf.data.TFRecordDataset(str(folder / WARMUP_FILE)))  # DataLossError if cut
    except (DecodeError, IndexError, ValueError, tf.errors.OpError):  # a cut file, as each reader says it
        found, warmup = set(), 0
    if not set(endpoints) <= found or warmup != 1:
        raise write_failed(output_dir, "the SavedModel came out incomplete; a full disk or a file-size limit?")


def _write_failure(exc: BaseException) -> str:
    """'File too large' from TF's '{{function_node ...}} /x/.tmp-m/variables/...; File too large [Op:SaveV2]'."""
    if not isinstance(exc, tf.errors.OpError):
        return failure_reason(exc)
    first = (exc.message or type(exc).__name__).strip().splitlines()[0]
    return first.split(" [Op:")[0].rsplit("; ", 1)[-1]


def write_warmup_requests(model_dir, inputs: dict, signature: str = SERVING_SIGNATURE) -> pathlib.Path:
    """Writes TF Serving's warmup file: one PredictionLog of a ``signature`` request with ``inputs``.

    ``inputs``: input name -> array or TensorProto. The model name is left empty: a
    server replays the file for the version it loads from, whatever it calls the model.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
    for name, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        request.inputs[name].CopyFrom(proto)
    record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    path = pathlib.Path(model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(record.SerializeToString())
    return path


def export_version(
    run_dir, base_dir, version: int | None = None, checkpoint: str = "best", overwrite: bool = False
) -> tuple[pathlib.Path, int]:
    """Writes the run's generator as version ``version`` of a served model: ``base_dir/<version>/``.

    TF Serving loads only integer version folders under its model base path and
    serves the highest; ``version`` None takes the next free integer (1 for a new
    ``base_dir``). An existing version is replaced only with ``overwrite``. A
    ``base_dir`` that is itself an export (the flat layout) is refused: loading it
    would never see the versions inside. Returns (the version folder, version).
    """
    base_dir = pathlib.Path(base_dir)
    if is_exported_model(base_dir):
        raise InputError(
            base_dir, "is itself a SavedModel (flat layout); export to a new folder, or move it into a version folder"
        )
    if base_dir.exists() and not base_dir.is_dir():
        raise InputError(base_dir, "is a file, not a folder for model versions")
    if version is None:
        version = (versions(base_dir) or [0])[-1] + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(base_dir, f"version must be a positive integer, got {version!r}")
    return export_generator(run_dir, base_dir / str(version), checkpoint, overwrite), version


def export_generator(run_dir, output_dir, checkpoint: str = "best", overwrite: bool = False) -> pathlib.Path:
    """Writes the run's generator as a SavedModel folder ``output_dir`` itself; returns it.

    The flat layout (pretrained models, cascade stages); ``export_version`` writes TF Serving's.
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise InputError(output_dir, "exists and is not empty; not overwriting")
    generator, run = load_run_generator(run_dir, checkpoint)
    return save_block_model(generator, ModelInfo.from_run(run, checkpoint), output_dir, overwrite)
