"""TensorFlow's CPU runtime, set before TensorFlow is first imported: oneDNN on, threads that fit the machine.

Importing ``cgan_ct`` (any module of it, any job, benchmark or test) runs
``configure_environment()`` first, which sets, unless the user set them already:

- ``TF_ENABLE_ONEDNN_OPTS=1`` on x86 CPUs. TensorFlow turns its oneDNN kernels
  on by default only where it finds AVX-512-class features; elsewhere (AVX2
  machines such as AMD EPYC) it falls back to kernels ~18x slower for this
  project's train step (BUILD_NOTES.md, "CPU runtime"). ``TF_ENABLE_ONEDNN_OPTS=0``
  in the environment keeps them off.
- ``TF_NUM_INTRAOP_THREADS`` and ``TF_NUM_INTEROP_THREADS`` to the cores this
  process may really use: the CPU affinity mask, capped by a cgroup CPU quota
  (containers, Kubernetes and Slurm limits). TensorFlow reads the affinity mask
  but not the quota, so a container limited to 4 of 64 cores would otherwise
  run 64-thread pools on 4 cores' time.

Nothing here imports TensorFlow. Once TensorFlow is imported its runtime is
fixed, so a program that imports TensorFlow (or Keras) before ``cgan_ct`` keeps
TensorFlow's own defaults; ``status()`` says what is in force.
"""

from __future__ import annotations

import math
import os
import pathlib
import platform
import sys

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
INTRA_OP = "TF_NUM_INTRAOP_THREADS"
INTER_OP = "TF_NUM_INTEROP_THREADS"
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


def _cgroup_v2_limit(root: pathlib.Path, proc_cgroup: str) -> float | None:
    """The tightest ``cpu.max`` quota (in CPUs) from this process's cgroup up to the root, or None."""
    relative = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), None)
    if relative is None:
        return None
    folder = root / relative.strip().lstrip("/")
    limits = []
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                limits.append(float(quota) / float(period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def _cgroup_v1_limit(root: pathlib.Path) -> float | None:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota = float((root / name / "cpu.cfs_quota_us").read_text())
            period = float((root / name / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def cgroup_cpu_limit(root="/sys/fs/cgroup", proc_cgroup: str | None = None) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 CFS quota), or None when there is no quota."""
    root = pathlib.Path(root)
    if proc_cgroup is None:
        try:
            proc_cgroup = pathlib.Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    limit = _cgroup_v2_limit(root, proc_cgroup)
    return limit if limit is not None else _cgroup_v1_limit(root)


def usable_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """Cores this process can keep busy: its affinity mask, capped by the cgroup quota (rounded up)."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            affinity = os.cpu_count() or 1
        quota = cgroup_cpu_limit() if quota is None else quota
    cores = affinity if quota is None else min(affinity, math.ceil(quota - 1e-9))
    return max(1, cores)


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in _X86


def configure_environment(environ=None, machine: str | None = None, cores: int | None = None) -> dict:
    """Sets the variables above in ``environ`` (default ``os.environ``) where unset; returns what it set."""
    environ = os.environ if environ is None else environ
    if environ is os.environ and "tensorflow" in sys.modules:
        return {}  # too late: TensorFlow read its settings when it was imported
    wanted = {}
    if is_x86(machine):
        wanted[ONEDNN] = "1"
    threads = str(cores or usable_cores())
    wanted[INTRA_OP] = threads
    wanted[INTER_OP] = threads
    changed = {k: v for k, v in wanted.items() if not environ.get(k)}
    environ.update(changed)
    return changed


def status() -> dict:
    """What is in force now: the CPU, the oneDNN setting and thread counts (for logs and benchmarks)."""
    return {
        "cpu": cpu_model(),
        "onednn": os.environ.get(ONEDNN, "TensorFlow's default"),
        "intra_op_threads": os.environ.get(INTRA_OP, "TensorFlow's default"),
        "inter_op_threads": os.environ.get(INTER_OP, "TensorFlow's default"),
        "usable_cores": usable_cores(),
    }


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the platform's processor string."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


KERAS_BACKENDS = ("tensorflow", "jax")


def select_keras_backend(argv=None, environ=None) -> str | None:
    """Sets KERAS_BACKEND from a job's ``--backend NAME`` / ``--backend=NAME`` before Keras is imported.

    Keras reads its backend once, at import; a job's flags are parsed after its imports. Returns the
    name given, or None. A name Keras does not offer here is left for the flag's own check to refuse.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    name = None
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        if arg.startswith("--backend="):
            name = arg.split("=", 1)[1]
        elif arg == "--backend" and i + 1 < len(argv):
            name = argv[i + 1]
    if name in KERAS_BACKENDS:
        if "keras" in sys.modules and environ.get("KERAS_BACKEND", "tensorflow") != name:
            raise RuntimeError(f"--backend {name}: Keras was imported with another backend already")
        environ["KERAS_BACKEND"] = name
    return name
