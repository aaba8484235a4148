"""A full disk, as a file-size limit: every writer fails with one line naming its output, and leaves nothing.

Each case runs in a subprocess under ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so a write past the limit fails
with EFBIG ("File too large") as a write to a full disk fails with ENOSPC, instead of killing the process.
ITK's NIfTI writer, for one, only prints "wrote only 0 of N bytes" and returns. Outputs also take one mode,
0666 less the user's umask, whichever library made the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cgan_ct import InputError, Volume, write_nifti
from cgan_ct.io.atomic_files import TMP_PREFIX
from cgan_ct.io.volume import AcquisitionInfo

BIN = pathlib.Path(sys.executable).parent

# The child's limit and signal; ``outcome(write)`` sets them only after the setup, then reports what write() did.
_PREAMBLE = """
import json, pathlib, resource, signal, sys
import numpy as np
OUT, LIMIT = pathlib.Path(sys.argv[1]), int(sys.argv[2])

def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG for a write past the limit, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

def outcome(write):
    limit_file_size()
    try:
        write()
        result = {"raised": None}
    except Exception as exc:
        result = {"raised": type(exc).__name__, "message": str(exc)}
    print(json.dumps(result))

def volume(shape=(8, 64, 64)):
    from cgan_ct import Volume
    from cgan_ct.io.volume import AcquisitionInfo
    hu = np.random.default_rng(0).integers(-1024, 3000, size=shape).astype(np.int16)
    return Volume(hu, (2.0, 0.8, 0.8), (0.0, 0.0, 0.0), np.eye(3), "vol-test", "pat-test", AcquisitionInfo("NIfTI"))
"""

# A command run under the limit: the limit and the ignored signal both pass through exec.
_LAUNCH = (
    "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _volume(shape: tuple[int, int, int], seed: int) -> Volume:
    hu = np.random.default_rng(seed).integers(-1024, 3000, size=shape).astype(np.int16)
    return Volume(hu, (2.0, 0.8, 0.8), (0.0, 0.0, 0.0), np.eye(3), "vol-test", "pat-test", AcquisitionInfo("NIfTI"))


def _limited(folder: pathlib.Path, limit: int, body: str) -> dict:
    """Runs ``body`` (after the preamble) in a subprocess; what its outcome(...) reported."""
    script = _PREAMBLE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(limit)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_failed_cleanly(result: dict, final: pathlib.Path, before: list[str]) -> None:
    assert result["raised"] == "InputError", result
    message = result["message"]
    assert message.startswith(f"{final}: writing failed") and "\n" not in message, message
    assert "File too large" in message or "incomplete" in message, message
    assert not final.exists()
    assert sorted(os.listdir(final.parent)) == before  # no temporary file or folder left either


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nii"])
def test_nifti_on_a_full_disk_fails_and_leaves_nothing(tmp_path, name):
    body = f"""
        from cgan_ct import write_nifti
        v = volume()
        outcome(lambda: write_nifti(v, OUT / {name!r}))
    """
    _assert_failed_cleanly(_limited(tmp_path, 16384, body), tmp_path / name, [])


def test_info_write_nifti_on_a_full_disk_exits_non_zero_with_one_line(tmp_path):
    source = tmp_path / "in" / "source.nii"
    source.parent.mkdir()
    write_nifti(_volume((8, 64, 64), seed=1), source)
    out = tmp_path / "out"
    out.mkdir()
    command = [str(BIN / "cgan-ct-info"), str(source), "--write_nifti", str(out / "x.nii.gz")]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, "16384", *command], capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0, done.stdout
    assert "wrote NIfTI" not in done.stdout
    failures = [line for line in done.stderr.splitlines() if "writing failed" in line]
    assert len(failures) == 1 and str(out / "x.nii.gz") in failures[0], done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(out) == []


def test_dicom_on_a_full_disk_fails_and_leaves_nothing(tmp_path):
    body = """
        from cgan_ct import write_dicom_series
        v = volume()
        outcome(lambda: write_dicom_series(v, OUT / "series"))
    """
    _assert_failed_cleanly(_limited(tmp_path, 4096, body), tmp_path / "series", [])


def test_tfrecord_shard_on_a_full_disk_fails_and_leaves_nothing(tmp_path):
    body = """
        from cgan_ct.data.tfrecord_io import ShardWriter

        def write():
            with ShardWriter(OUT / "train-00000-of-00001.tfrecord") as writer:
                for _ in range(8):
                    writer.write(bytes(4096))
                writer.commit()

        outcome(write)
    """
    _assert_failed_cleanly(_limited(tmp_path, 16384, body), tmp_path / "train-00000-of-00001.tfrecord", [])


def test_convert_with_workers_on_a_full_disk_exits_non_zero_with_one_line(tmp_path):
    # The shard's error comes back from a worker process: one line naming the shard, not a BrokenProcessPool.
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in range(4):
        write_nifti(_volume((30, 40, 40), seed=p), inputs / f"p{p}.nii.gz")
    out = tmp_path / "ds"
    command = [str(BIN / "cgan-ct-convert"), f"--input={inputs}", f"--output_dir={out}", "--preset=smoke"]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, "200000", *command, "--workers=2"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0, done.stdout
    failures = [line for line in done.stderr.splitlines() if "writing failed (File too large)" in line]
    assert len(failures) == 1 and ".tfrecord: writing failed" in failures[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list(out.glob("*.tfrecord")) and not list(out.glob(f"{TMP_PREFIX}*"))


def test_json_record_on_a_full_disk_fails_and_keeps_the_previous_one(tmp_path):
    body = """
        from cgan_ct.io.json_files import write_json_atomic
        write_json_atomic(OUT / "old.json", {"kept": True})
        outcome(lambda: write_json_atomic(OUT / "new.json", {"values": list(range(20000))}))
        outcome(lambda: write_json_atomic(OUT / "old.json", {"values": list(range(20000))}))
    """
    script = _PREAMBLE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), "16384"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    new, old = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    _assert_failed_cleanly(new, tmp_path / "new.json", ["old.json"])
    assert old["raised"] == "InputError" and old["message"].startswith(f"{tmp_path / 'old.json'}: writing failed")
    assert json.loads((tmp_path / "old.json").read_text()) == {"kept": True}
    assert os.listdir(tmp_path) == ["old.json"]


@pytest.mark.slow
def test_saved_model_export_on_a_full_disk_fails_and_leaves_nothing(tmp_path):
    # The smoke generator's variables take 79 kB and its graph 188 kB: 50 kB stops the first file TF writes.
    body = """
        import dataclasses
        from cgan_ct.config import model_config
        from cgan_ct.model.export import ModelInfo, save_block_model
        from cgan_ct.model.networks import build_generator
        from cgan_ct.ops.intensity import linear_mapping

        generator = build_generator(model_config("smoke"))
        smoke = dataclasses.asdict(model_config("smoke"))
        info = ModelInfo(16, "denoise", linear_mapping().to_json(), model=smoke)
        outcome(lambda: save_block_model(generator, info, OUT / "model"))
    """
    _assert_failed_cleanly(_limited(tmp_path, 50_000, body), tmp_path / "model", [])


@pytest.mark.slow
def test_a_saved_model_cut_without_an_error_from_tensorflow_is_refused(tmp_path, monkeypatch):
    from cgan_ct.config import model_config
    from cgan_ct.model import export
    from cgan_ct.model.export import ModelInfo, save_block_model
    from cgan_ct.model.networks import build_generator
    from cgan_ct.ops.intensity import linear_mapping

    write_warmup_requests = export.write_warmup_requests

    def cut_then_warmup(folder, inputs):  # runs after TF wrote the model: as a writer that lost its tail silently
        data = next((pathlib.Path(folder) / "variables").glob("variables.data-*"))
        os.truncate(data, data.stat().st_size // 2)
        return write_warmup_requests(folder, inputs)

    monkeypatch.setattr(export, "write_warmup_requests", cut_then_warmup)
    smoke = model_config("smoke")
    info = ModelInfo(16, "denoise", linear_mapping().to_json(), model=dataclasses.asdict(smoke))
    with pytest.raises(InputError, match="model: writing failed .the SavedModel came out incomplete"):
        save_block_model(build_generator(smoke), info, tmp_path / "model")
    assert os.listdir(tmp_path) == []


def test_volume_error_crosses_a_process_boundary():
    # A conversion's workers send a shard's error back pickled: it must arrive as itself, not a BrokenProcessPool.
    error = pickle.loads(pickle.dumps(InputError("/data/x.tfrecord", "writing failed (File too large)")))
    assert isinstance(error, InputError) and str(error) == "/data/x.tfrecord: writing failed (File too large)"
    assert error.source == "/data/x.tfrecord" and error.problem == "writing failed (File too large)"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_nifti_dicom_shard_and_json_outputs_take_the_users_umask(tmp_path, umask):
    body = f"""
        import os
        os.umask({umask:#o})
        from cgan_ct import write_dicom_series, write_nifti
        from cgan_ct.data.tfrecord_io import ShardWriter
        from cgan_ct.io.json_files import write_json_atomic
        v = volume((2, 8, 8))
        write_nifti(v, OUT / "x.nii.gz")
        write_nifti(v, OUT / "x.nii")
        write_dicom_series(v, OUT / "series")
        with ShardWriter(OUT / "s.tfrecord") as writer:
            writer.write(b"record")
            writer.commit()
        write_json_atomic(OUT / "r.json", {{}})
        print(json.dumps({{"raised": None}}))
    """
    _limited(tmp_path, 1 << 30, body)
    files = ["x.nii.gz", "x.nii", "series/IM00001.dcm", "series/IM00002.dcm", "s.tfrecord", "r.json"]
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in files}
    assert modes == dict.fromkeys(files, 0o666 & ~umask)
    assert stat.S_IMODE((tmp_path / "series").stat().st_mode) == 0o777 & ~umask
