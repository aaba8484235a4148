"""Training job and export: resume after kill -9, divergence, multi-worker, SavedModel round trip."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.config import model_config
from cgan_ct.data.input_pipeline import PipelineOptions, make_dataset
from cgan_ct.model import training
from cgan_ct.model.build import build_gan
from cgan_ct.model.export import export_generator
from cgan_ct.model.training import Backup, DivergenceGuard, RunOptions, train
from cgan_ct.ops.intensity import IntensityMapping
from tests.conftest import REPO

SMOKE = model_config("smoke")


def _cli(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.train", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_run_folder_contents(smoke_run):
    names = {p.name for p in smoke_run.iterdir()}
    assert {"run.json", "backup", "generator_last.keras", "generator_best.keras", "log.csv", "tensorboard"} <= names
    assert json.loads((smoke_run / "backup" / "state.json").read_text())["step"] == 6
    log = (smoke_run / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and "val_g_l1" in log[0] and len(log) == 2
    events = list((smoke_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert any("images" in str(p) for p in events)


def test_autoencode_trains_without_the_identity_start(smoke_dataset, tmp_path):
    run_dir = tmp_path / "autoencode"
    train(smoke_dataset, run_dir, SMOKE, RunOptions("autoencode", steps_per_epoch=1), verbose=0)
    assert SMOKE.residual and json.loads((run_dir / "run.json").read_text())["model"]["residual"] is False
    generator = keras.models.load_model(run_dir / "generator_last.keras", compile=False)
    y = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 16, 1)).astype(np.float32)
    assert np.abs(generator([y, np.zeros_like(y)], training=False).numpy() - y).mean() > 0.05  # not Y for free


def test_best_generator_is_chosen_by_validation_psnr_in_hu(smoke_run):
    header, row = (smoke_run / "log.csv").read_text().splitlines()
    logged = dict(zip(header.split(","), row.split(","), strict=True))
    best = json.loads((smoke_run / "best.json").read_text())
    assert best["metric"] == "val_psnr_hu" and best["epoch"] == 1
    assert best["val_psnr_hu"] == pytest.approx(float(logged["val_psnr_hu"]), rel=1e-6)
    assert 10 < best["val_psnr_hu"] < 100  # HU, data range 4096: a real figure, not the normalized PSNR
    assert float(logged["val_z_std_hu"]) >= 0  # whether the noise input changes the output, logged


@pytest.mark.slow
def test_kill_9_mid_epoch_resumes_to_the_same_step_count(smoke_dataset, tmp_path):
    args = [
        "--dataset_dir",
        smoke_dataset,
        "--task",
        "denoise",
        "--preset",
        "smoke",
        "--epochs",
        "2",
        "--steps_per_epoch",
        "12",
        "--checkpoint_every",
        "3",
        "--verbose",
        "0",
    ]
    state = tmp_path / "killed" / "backup" / "state.json"
    process = _cli(*args, "--output_dir", tmp_path / "killed")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if state.exists() and 3 <= json.loads(state.read_text())["step"] < 12:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert 3 <= killed_at < 24, "the job was not killed mid-training"
    resumed = _cli(*args, "--output_dir", tmp_path / "killed")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert "finished: 24 steps" in out
    assert json.loads(state.read_text())["step"] == 24
    # that resumed epochs log what an uninterrupted run would: test_resumed_epoch_logs_the_averages_...


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    gan = build_gan(SMOKE)
    guard = DivergenceGuard()
    guard.set_model(gan)
    backup = Backup(tmp_path / "backup", every=1, guard=guard)
    guard.on_train_batch_end(0, {"g_total": 1.0, "d_loss": 0.5})
    assert not guard.diverged
    guard.on_train_batch_end(1, {"g_total": math.nan, "d_loss": 0.5})
    assert guard.diverged and gan.stop_training and "non-finite g_total" in guard.message
    backup.save()  # refuses to overwrite the last good resume point
    assert not (tmp_path / "backup").exists()


def test_rerun_into_a_run_with_other_settings_is_refused(smoke_dataset, smoke_run):
    from cgan_ct.errors import InputError

    with pytest.raises(InputError, match="other settings"):
        train(smoke_dataset, smoke_run, SMOKE, RunOptions("depixelate", steps_per_epoch=6), verbose=0)
    done = train(smoke_dataset, smoke_run, SMOKE, RunOptions("denoise", steps_per_epoch=6), verbose=0)
    assert done.message.startswith("already finished")


def test_saved_model_reloads_without_the_project_and_matches_keras(smoke_run, tmp_path):
    model_dir = export_generator(smoke_run, tmp_path / "model")
    info = json.loads((model_dir / "cgan_ct_model.json").read_text())
    assert info["block_size"] == 16 and info["task"] == "denoise"
    rng = np.random.default_rng(0)
    blocks_hu = rng.uniform(-1024, 1500, (3, 16, 16, 16, 1)).astype(np.float32)
    noise = rng.uniform(-1, 1, (3, 16, 16, 16, 1)).astype(np.float32)
    np.save(tmp_path / "blocks.npy", blocks_hu)
    np.save(tmp_path / "noise.npy", noise)
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        model = tf.saved_model.load({str(model_dir)!r})
        blocks, noise = np.load({str(tmp_path / "blocks.npy")!r}), np.load({str(tmp_path / "noise.npy")!r})
        sig = model.signatures
        norm = sig["generate_normalized"](condition=tf.constant(blocks / 2000), noise=tf.constant(noise))["generated"]
        a = sig["generate_hu_seeded"](blocks_hu=tf.constant(blocks), seed=tf.constant([1, 2], tf.int64))["blocks_hu"]
        b = sig["generate_hu_seeded"](blocks_hu=tf.constant(blocks), seed=tf.constant([1, 2], tf.int64))["blocks_hu"]
        c = sig["serving_default"](blocks_hu=tf.constant(blocks))["blocks_hu"]
        np.save({str(tmp_path / "norm.npy")!r}, norm.numpy()); np.save({str(tmp_path / "seeded.npy")!r}, a.numpy())
        assert np.array_equal(a.numpy(), b.numpy()) and c.shape == blocks.shape
        assert not any(m.startswith("cgan_ct") for m in sys.modules), "the project was imported"
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    generator = keras.models.load_model(smoke_run / "generator_best.keras", compile=False)
    expected = generator([tf.constant(blocks_hu / 2000), tf.constant(noise)], training=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "norm.npy"), expected, atol=1e-5)
    mapping = IntensityMapping.from_json(info["intensity"])
    seeded_noise = tf.random.stateless_uniform(blocks_hu.shape, tf.constant([1, 2], tf.int64), -1.0, 1.0)
    condition = tf.constant(mapping.forward(blocks_hu))
    expected_hu = mapping.inverse(generator([condition, seeded_noise], training=False).numpy())
    np.testing.assert_allclose(np.load(tmp_path / "seeded.npy"), expected_hu, atol=0.5)


def test_saved_model_rejects_bad_input(smoke_run, tmp_path):
    model = tf.saved_model.load(str(export_generator(smoke_run, tmp_path / "model")))
    serve = model.signatures["serving_default"]
    for bad in (tf.zeros([2, 16, 16, 16]), tf.zeros([2, 8, 16, 16, 1]), tf.zeros([2, 16, 16, 16, 1], tf.int32)):
        with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
            serve(blocks_hu=bad)


def test_export_refuses_missing_run_and_existing_output(smoke_run, tmp_path):
    from cgan_ct.errors import InputError

    with pytest.raises(InputError, match="not a training run"):
        export_generator(tmp_path, tmp_path / "m")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep").write_text("x")
    with pytest.raises(InputError, match="not overwriting"):
        export_generator(smoke_run, tmp_path / "m")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_training_on_localhost(smoke_dataset, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's logs (hidden by default) say which strategy ran
        processes.append(
            _cli(
                "--dataset_dir",
                smoke_dataset,
                "--task",
                "denoise",
                "--preset",
                "smoke",
                "--epochs",
                "1",
                "--steps_per_epoch",
                "4",
                "--verbose",
                "0",
                "--output_dir",
                tmp_path / "run",
                env=env,
            )
        )
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    assert "finished: 4 steps" in outputs[0][0]
    assert "MultiWorkerMirroredStrategy" in outputs[0][1] or "CollectiveAllReduce" in outputs[0][1]
    assert (tmp_path / "run" / "generator_last.keras").exists()


class _InterruptError(Exception):
    pass


class _InterruptAt(keras.callbacks.Callback):
    """Stops the job like a kill at the end of step ``step`` (after that step's checkpoint)."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.done = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done == self.step:
            raise _InterruptError


def _log_rows(run_dir) -> list[dict]:
    header, *rows = (run_dir / "log.csv").read_text().splitlines()
    return [dict(zip(header.split(","), map(float, row.split(",")), strict=True)) for row in rows]


def test_crash_after_the_weights_were_replaced_resumes_to_the_requested_steps(smoke_dataset, tmp_path, monkeypatch):
    replace, written = os.replace, []

    def crash_after_the_second_weights(src, dst):
        replace(src, dst)
        if str(dst).endswith(".weights.h5"):
            written.append(dst)
            if len(written) == 2:  # the weights of step 4 are in place; whatever comes next is lost
                raise _InterruptError

    options = RunOptions("denoise", steps_per_epoch=6, checkpoint_every=2)
    config = model_config("smoke", epochs=1)
    monkeypatch.setattr(os, "replace", crash_after_the_second_weights)
    with pytest.raises(_InterruptError):
        train(smoke_dataset, tmp_path / "run", config, options)
    monkeypatch.setattr(os, "replace", replace)
    result = train(smoke_dataset, tmp_path / "run", config, options)
    assert result.steps == 6 and result.message == "finished: 6 steps"
    assert train(smoke_dataset, tmp_path / "run", config, options).message == "already finished: 6 steps"


def test_mixed_precision_counts_skipped_steps_and_restores_the_dtype_policy(smoke_dataset, tmp_path):
    class Overflow(keras.callbacks.Callback):
        """A loss scale no float16 gradient survives for the first step: the optimizer skips G's update."""

        forced = False

        def on_train_batch_begin(self, batch, logs=None):
            if not self.forced:
                self.model.g_optimizer.dynamic_scale.assign(2.0**100)

        def on_train_batch_end(self, batch, logs=None):
            if not self.forced:
                self.forced = int(self.model.g_optimizer.iterations.numpy()) == 0  # skipped
                self.model.g_optimizer.dynamic_scale.assign(2.0**15)

    config = model_config("smoke", epochs=2, mixed_precision=True)
    options = RunOptions("denoise", steps_per_epoch=3, checkpoint_every=2)
    overflow = Overflow()
    assert keras.config.dtype_policy().name == "float32"
    try:
        result = train(smoke_dataset, tmp_path / "run", config, options, extra_callbacks=[overflow])
        policy = keras.config.dtype_policy().name
    finally:
        keras.config.set_dtype_policy("float32")
    assert overflow.forced and int(result.steps) == 6, result  # 6 steps taken, 5 of them applied to G
    assert policy == "float32"  # later models are built in float32 again
    assert [row["epoch"] for row in _log_rows(tmp_path / "run")] == [0, 1]
    assert train(smoke_dataset, tmp_path / "run", config, options).message == "already finished: 6 steps"


def test_resumed_epoch_logs_the_averages_of_the_uninterrupted_epoch(smoke_dataset, tmp_path):
    config = model_config("smoke", epochs=2)
    options = RunOptions("denoise", steps_per_epoch=4, checkpoint_every=2)
    keras.utils.set_random_seed(1)
    train(smoke_dataset, tmp_path / "whole", config, options)
    keras.utils.set_random_seed(1)
    with pytest.raises(_InterruptError):  # stopped after step 6: mid-epoch 2, just checkpointed
        train(smoke_dataset, tmp_path / "resumed", config, options, extra_callbacks=[_InterruptAt(6)])
    train(smoke_dataset, tmp_path / "resumed", config, options)
    whole, resumed = _log_rows(tmp_path / "whole"), _log_rows(tmp_path / "resumed")
    assert [row["epoch"] for row in resumed] == [0, 1] and list(resumed[1]) == list(whole[1])
    for name, value in whole[1].items():  # the same steps, weights, data and random draws
        assert resumed[1][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_tensorboard_images_use_the_runs_pipeline_options(smoke_dataset, tmp_path, monkeypatch):
    sampled = []

    class SampledError(Exception):
        pass

    def record(log_dir, batch):
        sampled.append(batch)
        raise SampledError  # all this test needs: the job stops before training

    monkeypatch.setattr(training, "ImageSummaries", record)
    pipeline = PipelineOptions(peak=20.0)
    with pytest.raises(SampledError):
        train(smoke_dataset, tmp_path / "run", SMOKE, RunOptions("denoise", steps_per_epoch=1, pipeline=pipeline))
    condition, target = next(iter(make_dataset(smoke_dataset, "test", "denoise", 4, 0, pipeline)))
    np.testing.assert_array_equal(sampled[0][0].numpy(), condition.numpy())
    np.testing.assert_array_equal(sampled[0][1].numpy(), target.numpy())


def test_a_resume_point_written_before_issue_18_still_resumes(smoke_dataset, tmp_path):
    import h5py

    options = RunOptions("denoise", steps_per_epoch=4, checkpoint_every=2)
    with pytest.raises(_InterruptError):
        train(smoke_dataset, tmp_path / "run", SMOKE, options, extra_callbacks=[_InterruptAt(2)])
    backup = tmp_path / "run" / "backup"
    with h5py.File(backup / "resume.weights.h5", "a") as weights:  # the layout of before: weights + state.json
        noise = weights["layers/training_state/vars/1"][0].tolist()
        del weights["layers/training_state"]
    os.rename(backup / "resume.weights.h5", backup / "weights.weights.h5")
    (backup / "state.json").write_text(json.dumps({"step": 2, "noise_seed_state": noise}))
    result = train(smoke_dataset, tmp_path / "run", SMOKE, options)
    assert result.message == "finished: 4 steps"
    assert sorted(p.name for p in backup.iterdir()) == ["resume.weights.h5", "state.json"]
