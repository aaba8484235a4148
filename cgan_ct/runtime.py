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
- ``TF_CPP_MIN_LOG_LEVEL=3``: TensorFlow's C++ runtime logs nothing below FATAL
  (no INFO, WARNING or ERROR lines; on a machine without a GPU but with an
  NVIDIA driver library, the ``failed call to cuInit`` ERROR line is one of
  them). Errors a job can act on still reach it as Python exceptions; Python
  warnings are untouched. ``TF_CPP_MIN_LOG_LEVEL=0`` (or 1: no INFO, 2: no
  WARNING either) in the environment gets TensorFlow's own logs back, e.g. to
  see why a GPU is not used.

A few of TensorFlow's lines are written while its libraries load, before it
reads ``TF_CPP_MIN_LOG_LEVEL`` (the oneDNN and CUDA-driver notes, and abseil's
``WARNING: All log messages before absl::InitializeLog() ...``): no variable
hides them. ``quiet_tensorflow_import()`` (every job calls it) filters them out
of stderr while ``tensorflow`` is first imported, by the level in force.

Nothing here imports TensorFlow. Once TensorFlow is imported its runtime is
fixed, so a program that imports TensorFlow (or Keras) before ``cgan_ct`` keeps
TensorFlow's own defaults; ``status()`` says what is in force.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import math
import os
import pathlib
import platform
import re
import sys
import tempfile

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
INTRA_OP = "TF_NUM_INTRAOP_THREADS"
INTER_OP = "TF_NUM_INTEROP_THREADS"
LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"  # TensorFlow's levels: 0 all, 1 no INFO, 2 no WARNING either, 3 no ERROR either
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
    wanted[LOG_LEVEL] = QUIET_LOG_LEVEL
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
        "native_log_level": os.environ.get(LOG_LEVEL, "TensorFlow's default"),
        "usable_cores": usable_cores(),
    }


# A line of TensorFlow's C++ logging (abseil's format): severity, date, time, thread, source file:line.
# Before abseil is initialised the date reads 0000 and the time 00:00:<seconds since 1970>.
_NATIVE_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+\.(?:cc|cpp|c|h):\d+\] ")
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITIES = "IWEF"


def native_log_level(environ=None) -> int:
    """The ``TF_CPP_MIN_LOG_LEVEL`` in force (0 when unset or not a number, as TensorFlow reads it)."""
    environ = os.environ if environ is None else environ
    try:
        return max(0, int(environ.get(LOG_LEVEL, "0")))
    except ValueError:
        return 0


def hides_native_line(line: str, level: int) -> bool:
    """Whether TensorFlow would not print this C++ log line at ``level`` had it read the level in time.

    Only C++ lines (a ``.cc``/``.h`` source) are judged, never a Python ``absl.logging`` line (a ``.py``
    source) nor any other text; FATAL lines are always kept. Abseil's pre-initialisation warning goes
    with the lines it precedes (hidden at any level above 0).
    """
    if level <= 0:
        return False
    if line.startswith(_ABSL_PREINIT):
        return True
    match = _NATIVE_LINE.match(line)
    return bool(match) and _SEVERITIES.index(match.group(1)) < min(level, 3)


@contextlib.contextmanager
def native_stderr_filtered(level: int):
    """Runs the block with file descriptor 2 captured; then writes back what ``level`` does not hide.

    Everything written to stderr in the block (native libraries and Python alike) comes out after it,
    in order; when the block raises, all of it comes out, hidden lines too (they may say why).
    """
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture (a closed file descriptor 2)
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if failed or not hides_native_line(line, level)).encode("utf-8")
            while kept:
                kept = kept[os.write(2, kept) :]


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: gives ``tensorflow``'s first import the loader of its real spec, run filtered."""

    def __init__(self, name: str, level: int):
        self.name = name
        self.level = level

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        uninstall_quiet_import()  # once: a later import finds the module in sys.modules
        spec = importlib.util.find_spec(fullname)
        if spec is None or isinstance(spec.loader, type) or not hasattr(spec.loader, "exec_module"):
            return spec  # not a per-module loader object: leave it as it is
        exec_module = spec.loader.exec_module
        level = self.level

        def quiet_exec_module(module):
            with native_stderr_filtered(level):
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


def quiet_tensorflow_import(environ=None, name: str = "tensorflow") -> bool:
    """Makes the first ``import tensorflow`` hide the load-time lines ``TF_CPP_MIN_LOG_LEVEL`` cannot.

    Lines are hidden by the level in force (the user's own, else ``configure_environment``'s): nothing
    is hidden at 0. Returns whether the filter is in place (False: TensorFlow is imported already, or
    the level is 0).
    """
    level = native_log_level(environ)
    if name in sys.modules or level <= 0:
        return False
    uninstall_quiet_import()
    sys.meta_path.insert(0, _QuietImport(name, level))
    return True


def uninstall_quiet_import() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietImport)]


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``lscpu``'s "Model name") with its family and model numbers where ``/proc/cpuinfo``
    gives them (e.g. "AMD EPYC (family 25, model 17)": one name covers several generations), or the platform's
    processor string."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    if fields.get("cpu family") and fields.get("model"):
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


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


DEVICE_PATTERN = re.compile(r"^(auto|cpu|gpu:\d+)$")


def use_device(spec: str) -> str:
    """Runs this process's TensorFlow work on ``spec``: ``auto`` (TensorFlow's choice: the first GPU where
    there is one), ``cpu`` (GPUs hidden) or ``gpu:N`` (only the N-th GPU visible). Call before any tensor is
    made. Returns the device in words; a ``ValueError`` for a bad spec or a GPU this machine does not have."""
    if not DEVICE_PATTERN.match(spec or ""):
        raise ValueError(f"--device takes auto, cpu or gpu:N, got {spec!r}")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if spec == "auto":
        return f"GPU {gpus[0].name}" if gpus else f"CPU ({cpu_model()})"
    if spec == "cpu":
        tf.config.set_visible_devices([], "GPU")
        return f"CPU ({cpu_model()})"
    index = int(spec.split(":")[1])
    if index >= len(gpus):
        raise ValueError(f"--device {spec}: this machine has {len(gpus)} GPU(s) that TensorFlow can use")
    tf.config.set_visible_devices([gpus[index]], "GPU")
    return f"GPU {index} ({gpus[index].name})"
