"""TensorFlow's CPU runtime: oneDNN on by default on x86, the user's own setting kept, threads from usable cores."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from cgan_ct import runtime
from tests.conftest import REPO

_PROBE = """
import json, os, {first}
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
print(json.dumps({{"onednn": bool(_pywrap_util_port.IsMklEnabled()),
                  "env": {{k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS")}}}}))
"""


def _probe(first: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(first=first)],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not runtime.is_x86(), reason="oneDNN is switched on by cgan_ct on x86 CPUs only")
@pytest.mark.parametrize("first", ["cgan_ct", "pipelines.train", "tfrecords_tools.convert"])
def test_importing_the_package_then_tensorflow_turns_onednn_on(first):
    seen = _probe(first)
    assert seen["onednn"] is True
    assert seen["env"]["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert int(seen["env"]["TF_NUM_INTRAOP_THREADS"]) == runtime.usable_cores()


def test_a_users_own_setting_is_kept():
    seen = _probe("cgan_ct", TF_ENABLE_ONEDNN_OPTS="0", TF_NUM_INTRAOP_THREADS="1")
    assert seen["onednn"] is False
    assert seen["env"] == {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1"}


def test_configure_environment_fills_only_what_is_unset():
    environ = {"TF_NUM_INTEROP_THREADS": "3"}
    changed = runtime.configure_environment(environ, machine="x86_64", cores=6)
    set_here = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_NUM_INTRAOP_THREADS": "6", "TF_CPP_MIN_LOG_LEVEL": "3"}
    assert environ == set_here | {"TF_NUM_INTEROP_THREADS": "3"}
    assert changed == set_here
    asks_for_logs = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    runtime.configure_environment(asks_for_logs, machine="x86_64", cores=6)
    assert asks_for_logs["TF_CPP_MIN_LOG_LEVEL"] == "0"
    arm = {}
    runtime.configure_environment(arm, machine="aarch64", cores=2)
    assert "TF_ENABLE_ONEDNN_OPTS" not in arm and arm["TF_NUM_INTRAOP_THREADS"] == "2"


def test_cgroup_v2_quota_caps_the_cores(tmp_path):
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "job" / "cpu.max").write_text("400000 100000\n")
    (tmp_path / "job" / "step" / "cpu.max").write_text("150000 100000\n")
    assert runtime.cgroup_cpu_limit(tmp_path, "0::/job/step\n") == pytest.approx(1.5)
    assert runtime.cgroup_cpu_limit(tmp_path, "0::/job\n") == pytest.approx(4.0)
    assert runtime.cgroup_cpu_limit(tmp_path, "0::/\n") is None  # "max": no quota
    assert runtime.usable_cores(affinity=64, quota=1.5) == 2
    assert runtime.usable_cores(affinity=64, quota=4.0) == 4
    assert runtime.usable_cores(affinity=2, quota=16.0) == 2
    assert runtime.usable_cores(affinity=8, quota=None) == 8
    assert runtime.usable_cores(affinity=8, quota=0.2) == 1


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cgroup_cpu_limit(tmp_path, "4:cpu,cpuacct:/\n") == pytest.approx(3.0)
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert runtime.cgroup_cpu_limit(tmp_path, "4:cpu,cpuacct:/\n") is None


def test_cpu_model_names_family_and_model():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
    second = "processor\t: 1\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Other\n"
    assert runtime.cpu_model(text + "\n" + second) == "AMD EPYC (family 25, model 17)"  # the first processor's
    assert runtime.cpu_model("model name\t: Some ARM core\n") == "Some ARM core"  # no family or model given
    assert runtime.cpu_model("") == (platform.processor() or platform.machine())


def test_status_names_the_cpu_and_the_settings():
    status = runtime.status()
    assert status["cpu"] and status["usable_cores"] >= 1
    assert status["onednn"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default")


def test_backend_flag_reaches_keras_before_it_is_imported():
    import keras  # noqa: F401 - imported, on tensorflow: a later --backend jax cannot reach it

    from cgan_ct.runtime import select_keras_backend

    environ = {}
    assert select_keras_backend(["cgan-ct-train", "--backend", "tensorflow", "--task", "denoise"], environ) == (
        "tensorflow"
    )
    assert environ == {"KERAS_BACKEND": "tensorflow"}  # keras is imported here already, with tensorflow
    with pytest.raises(RuntimeError, match="imported with another backend"):
        select_keras_backend(["cgan-ct-train", "--backend=jax"], {})
    assert select_keras_backend(["cgan-ct-train", "--", "--backend", "jax"], {}) is None
    assert select_keras_backend(["cgan-ct-train", "--backend", "torch"], environ) == "torch"  # the flag refuses it
    assert environ == {"KERAS_BACKEND": "tensorflow"}
