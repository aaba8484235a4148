"""SavedModels as TensorFlow Serving loads them (issue 36): TensorFlow's own tools, not only tf.saved_model.load.

``tf.saved_model.load`` restores through the object graph and runs exports that a server cannot; these tests
load every shipped model and fresh exports with ``saved_model_cli run`` and with the TF1 session loader that
TF Serving's C++ server mirrors, and read the warmup records back with TF Serving's own protos.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.config import coarse_config, model_config
from cgan_ct.constants import CLIP_HU, SEEDED_SIGNATURE, SERVING_SIGNATURE, WARMUP_FILE
from cgan_ct.model import pretrained
from cgan_ct.model.export import ModelInfo, generator_from_export, save_block_model
from cgan_ct.model.networks import build_generator
from cgan_ct.model.session_loader import SessionModel
from cgan_ct.ops.intensity import linear_mapping
from tests.conftest import REPO

SHIPPED = ("denoise", "denoise-peak128", "depixelate", "lowdose")
SAVED_MODEL_CLI = pathlib.Path(sys.executable).parent / "saved_model_cli"  # installed with TensorFlow
SEED = np.array([7, 11], np.int64)


def _randomized_generator():
    """The smoke generator with random weights: a model whose output shows which weights it read."""
    generator = build_generator(model_config("smoke"))
    rng = np.random.default_rng(36)
    for variable in generator.trainable_variables:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(np.float32))
    return generator


@pytest.fixture(scope="module")
def smoke_export(tmp_path_factory):
    generator = _randomized_generator()
    info = ModelInfo(16, "denoise", linear_mapping().to_json(), model=dataclasses.asdict(model_config("smoke")))
    return save_block_model(generator, info, tmp_path_factory.mktemp("serving") / "smoke")


@pytest.fixture(scope="module")
def coarse_export(tmp_path_factory):
    from cgan_ct.synthesis.coarse_export import save_coarse_model
    from cgan_ct.synthesis.coarse_networks import build_coarse_generator

    config = coarse_config("smoke", size=16)
    folder = tmp_path_factory.mktemp("serving") / "coarse"
    return save_coarse_model(build_coarse_generator(config), linear_mapping(), config, folder)


def _model_dir(name: str, smoke_export) -> pathlib.Path:
    return smoke_export if name == "smoke" else pretrained.PRETRAINED_DIR / name


def _blocks_hu(block_size: int, count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(block_size)
    return rng.uniform(-1024, 1500, (count, block_size, block_size, block_size, 1)).astype(np.float32)


def _warmup_requests(model_dir) -> list:
    from tensorflow_serving.apis import prediction_log_pb2

    path = pathlib.Path(model_dir) / WARMUP_FILE
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


@pytest.mark.parametrize("name", ("smoke",) + SHIPPED)
def test_session_loader_restores_every_variable_and_serves_as_tf2_loading(name, smoke_export):
    model_dir = _model_dir(name, smoke_export)
    n = ModelInfo.load(model_dir).block_size
    blocks = _blocks_hu(n)
    tf2 = tf.saved_model.load(str(model_dir)).signatures[SEEDED_SIGNATURE]
    expected = tf2(blocks_hu=tf.constant(blocks), seed=tf.constant(SEED))["blocks_hu"].numpy()
    with SessionModel(model_dir) as served:
        assert served.uninitialized_variables() == []
        seeded = served.run(SEEDED_SIGNATURE, blocks_hu=blocks, seed=SEED)["blocks_hu"]
        np.testing.assert_allclose(seeded, expected, atol=1e-3)
        drawn = served.run(SERVING_SIGNATURE, blocks_hu=blocks)["blocks_hu"]
        assert drawn.shape == blocks.shape and CLIP_HU[0] <= drawn.min() and drawn.max() <= CLIP_HU[1]
        generated = served.run("generate_normalized", condition=blocks / 4096, noise=np.zeros_like(blocks))
        assert generated["generated"].shape == blocks.shape

        # the signature's own checks, reached as a server reaches them (no Python shape check first)
        shape = re.escape(f"blocks_hu must be float32 [batch, {n}, {n}, {n}, 1] for this model (block size {n})")
        with pytest.raises(tf.errors.InvalidArgumentError, match=shape + r"; got shape\] \[2 8 " + str(n)):
            served.run(SERVING_SIGNATURE, blocks_hu=blocks[:, :8])
        bad = blocks.copy()
        bad[1, 2, 3, 4, 0] = np.nan
        for signature, inputs in ((SERVING_SIGNATURE, {}), (SEEDED_SIGNATURE, {"seed": SEED})):
            with pytest.raises(tf.errors.InvalidArgumentError, match="blocks_hu holds NaN or Inf"):
                served.run(signature, blocks_hu=bad, **inputs)

        # the warmup request TF Serving replays at load: one block of the model's size to serving_default
        (request,) = [log.predict_log.request for log in _warmup_requests(model_dir)]
        assert request.model_spec.signature_name == SERVING_SIGNATURE and list(request.inputs) == ["blocks_hu"]
        warmup = tf.make_ndarray(request.inputs["blocks_hu"])
        assert warmup.shape == (1, n, n, n, 1) and warmup.dtype == np.float32
        assert served.run(SERVING_SIGNATURE, blocks_hu=warmup)["blocks_hu"].shape == warmup.shape


def _cli_command(model_dir, signature: str, inputs: dict, folder: pathlib.Path) -> list[str]:
    """saved_model_cli run of ``signature`` on ``inputs`` saved as .npy in ``folder``; outputs to folder/out."""
    folder.mkdir(parents=True)
    for key, value in inputs.items():
        np.save(folder / f"{key}.npy", value)
    given = ";".join(f"{key}={folder / key}.npy" for key in inputs)
    command = [str(SAVED_MODEL_CLI), "run", "--dir", str(model_dir), "--tag_set", "serve"]
    return command + ["--signature_def", signature, "--inputs", given, "--outdir", str(folder / "out")]


def test_saved_model_cli_runs_every_shipped_model_and_fresh_exports(smoke_export, coarse_export, tmp_path):
    """TensorFlow's own executable, one process a model, two at a time (each is mostly TensorFlow's import)."""
    assert SAVED_MODEL_CLI.exists(), f"TensorFlow installs saved_model_cli beside {sys.executable}"
    commands, shapes = {}, {}
    for name in ("smoke",) + SHIPPED:
        model_dir = _model_dir(name, smoke_export)
        blocks = _blocks_hu(ModelInfo.load(model_dir).block_size)
        shapes[name] = blocks.shape
        commands[name] = _cli_command(model_dir, SERVING_SIGNATURE, {"blocks_hu": blocks}, tmp_path / name)
    coarse_inputs = {"seed": SEED, "depth": np.array(3, np.int32)}
    commands["coarse"] = _cli_command(coarse_export, SERVING_SIGNATURE, coarse_inputs, tmp_path / "coarse")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = dict(zip(commands, pool.map(_run, commands.values()), strict=True))
    for name, result in runs.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    for name, shape in shapes.items():
        out = np.load(tmp_path / name / "out" / "blocks_hu.npy")
        assert out.shape == shape and out.dtype == np.float32, name
        assert CLIP_HU[0] <= out.min() and out.max() <= CLIP_HU[1] and np.isfinite(out).all(), name
    volume = np.load(tmp_path / "coarse" / "out" / "volume_hu.npy")
    assert volume.shape == (3, 16, 16) and CLIP_HU[0] <= volume.min() and volume.max() <= CLIP_HU[1]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_coarse_model_serves_through_the_session_loader(coarse_export):
    from cgan_ct.synthesis.coarse_export import CoarseModel

    expected = CoarseModel(coarse_export).draw(5, 4)
    with SessionModel(coarse_export) as served:
        assert served.uninitialized_variables() == []
        for signature in ("generate", SERVING_SIGNATURE):
            out = served.run(signature, seed=np.array([5, 0x5EED], np.int64), depth=np.array(4, np.int32))
            np.testing.assert_allclose(out["volume_hu"], expected, atol=1e-3)
        with pytest.raises(tf.errors.InvalidArgumentError, match="depth must be at least 1"):
            served.run("generate", seed=SEED, depth=np.array(0, np.int32))
        (request,) = [log.predict_log.request for log in _warmup_requests(coarse_export)]
        assert request.model_spec.signature_name == SERVING_SIGNATURE
        inputs = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
        assert sorted(inputs) == ["depth", "seed"] and inputs["seed"].dtype == np.int64
        assert served.run(SERVING_SIGNATURE, **inputs)["volume_hu"].shape[1:] == (16, 16)


def _write_as_before_issue_36(generator, info: ModelInfo, folder: pathlib.Path) -> None:
    """An export as cgan-ct wrote them until issue 36: a tf.Module holding the Keras model, tf.saved_model.save."""
    from cgan_ct.model.export import BlockGenerator

    module = tf.Module()
    module.generator = generator
    wrapped = BlockGenerator(generator, info.mapping, info.block_size)
    signatures = {name: tf.function(fn, input_signature=spec) for name, (fn, spec) in wrapped.endpoints().items()}
    tf.saved_model.save(module, str(folder), signatures=signatures)
    info.save(folder)


def test_a_model_exported_before_issue_36_is_re_exported_with_the_same_weights(tmp_path):
    generator = _randomized_generator()
    info = ModelInfo(16, "denoise", linear_mapping().to_json(), model=dataclasses.asdict(model_config("smoke")))
    _write_as_before_issue_36(generator, info, tmp_path / "old")
    with SessionModel(tmp_path / "old") as served:
        assert served.uninitialized_variables(), "the old export should leave variables to a TF1 loader"

    rebuilt = generator_from_export(tmp_path / "old")
    for a, b in zip(rebuilt.trainable_variables, generator.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # (the old writer did not keep dropout's seed state)
    again = save_block_model(rebuilt, info, tmp_path / "new")
    blocks = _blocks_hu(16)
    outputs = []
    for folder in (tmp_path / "old", again):
        seeded = tf.saved_model.load(str(folder)).signatures[SEEDED_SIGNATURE]
        outputs.append(seeded(blocks_hu=tf.constant(blocks), seed=tf.constant(SEED))["blocks_hu"].numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-3)
    with SessionModel(again) as served:
        assert served.uninitialized_variables() == []
    reread = generator_from_export(again)  # and an export of today reads back every variable
    for a, b in zip(reread.variables, rebuilt.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _package_data() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "package_data":
            return ast.literal_eval(node.value)["cgan_ct.model"]
    raise AssertionError("setup.py has no package_data")


def test_package_data_ships_every_file_of_the_shipped_models():
    package = REPO / "cgan_ct" / "model"
    shipped = {p for pattern in _package_data() for p in package.glob(pattern) if p.is_file()}  # setuptools' globs
    files = {p for p in pretrained.PRETRAINED_DIR.rglob("*") if p.is_file()}
    assert files <= shipped, f"setup.py's package_data leaves out {sorted(files - shipped)}"
    for name in SHIPPED:
        assert (pretrained.PRETRAINED_DIR / name / WARMUP_FILE).is_file(), name


def test_serving_bench_runs_with_tiny_arguments():
    command = [sys.executable, "benchmarks/serving_bench.py", "--model", "pretrained:denoise"]
    result = subprocess.run(command + ["--batches", "1,2", "--repeats", "1"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CPU:" in result.stdout and "session loader" in result.stdout and "tf.saved_model.load" in result.stdout
    assert re.search(r"batch\s+2\s.*blocks/s", result.stdout), result.stdout


@pytest.mark.parametrize("name", ["smoke", *pretrained.available()])
def test_serving_edges_empty_batch_batch_cap_and_normalized_range(name, smoke_export):
    """Issue 30 item 12: an empty batch answers an empty [0, N, N, N, 1]; more than MAX_SERVING_BATCH blocks,
    and generate_normalized values outside [-1, 1], are refused by the graph itself (TF Serving runs it)."""
    from cgan_ct.constants import MAX_SERVING_BATCH, NORMALIZED_SIGNATURE

    model_dir = _model_dir(name, smoke_export)
    n = ModelInfo.load(model_dir).block_size
    signatures = tf.saved_model.load(str(model_dir)).signatures
    empty = signatures[SERVING_SIGNATURE](blocks_hu=tf.zeros([0, n, n, n, 1]))["blocks_hu"]
    assert empty.shape == (0, n, n, n, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at most {MAX_SERVING_BATCH} blocks per request"):
        signatures[SERVING_SIGNATURE](blocks_hu=tf.fill([MAX_SERVING_BATCH + 1, n, n, n, 1], -1024.0))
    normalized = signatures[NORMALIZED_SIGNATURE]
    inside = tf.fill([1, n, n, n, 1], 0.5)
    assert normalized(condition=inside, noise=inside)["generated"].shape == (1, n, n, n, 1)
    for condition, noise in ((inside * 10.0, inside), (inside, -inside * 3.0)):  # HU given where [-1, 1] belongs
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be normalized values in \[-1, 1\]"):
            normalized(condition=condition, noise=noise)
