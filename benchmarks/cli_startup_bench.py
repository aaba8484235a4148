"""How fast each command answers ``--help`` and ``--version``, against the interpreter starting at all.

The limit is ``python -c pass`` (the interpreter and site-packages, nothing of ours), measured in the same
run, interleaved with the commands so that a busy machine slows both alike. Every variant runs in a fresh
process: one warm-up run (the disk cache, as a user's second call finds it), then --repeats timed runs;
we report the median seconds, the ratio to the limit, and whether the command imported TensorFlow.
The goal of issue 28 is --help under 1.5 s on a 2-core machine.

  python benchmarks/cli_startup_bench.py [--repeats 5] [--tiny]

--tiny: one timed run of --help per command (about 10 s in all), for CI.
"""

from __future__ import annotations

import ast
import os
import pathlib
import statistics
import subprocess
import sys
import time

from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs of each variant (after one warm-up run).", lower_bound=1)
_TINY = flags.DEFINE_bool("tiny", False, "One timed --help run per command, no --version: a quick check.")
_GOAL_S = 1.5


def _jobs() -> dict[str, str]:
    """setup.py's ``_JOBS`` (command suffix -> module), read without running setup.py."""
    for node in ast.parse((_ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_JOBS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("setup.py defines no _JOBS")


def _command(name: str, module: str) -> list[str]:
    script = pathlib.Path(sys.executable).parent / f"cgan-ct-{name}"
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def _seconds(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, cwd=_ROOT, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}: {result.stderr.decode()[-500:]}")
    return elapsed


def _imports_tensorflow(command: list[str], env: dict) -> bool:
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=_ROOT, env=env | {"PYTHONPROFILEIMPORTTIME": "1"}
    )
    return any(line.rstrip().endswith((" tensorflow", " keras")) for line in result.stderr.splitlines())


def main(argv: list[str]) -> None:
    del argv
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # a user who set nothing
    asks = ("--help",) if _TINY.value else ("--help", "--version")
    repeats = 1 if _TINY.value else _REPEATS.value
    variants = {"python -c pass": [sys.executable, "-c", "pass"]}
    for name, module in _jobs().items():
        for ask in asks:
            variants[f"cgan-ct-{name} {ask}"] = [*_command(name, module), ask]
    times: dict[str, list[float]] = {label: [] for label in variants}
    for command in variants.values():
        _seconds(command, env)  # warm-up
    for _ in range(repeats):
        for label, command in variants.items():  # interleaved: load on the machine hits every variant alike
            times[label].append(_seconds(command, env))
    median = {label: statistics.median(t) for label, t in times.items()}
    limit = median["python -c pass"]
    print(f"start-up, median of {repeats} run(s) after a warm-up; limit: python -c pass = {limit:.3f} s")
    print(f"{'command':<42} {'seconds':>8} {'x limit':>8}  {'TensorFlow':<10} goal {_GOAL_S} s")
    for label, command in variants.items():
        if label == "python -c pass":
            continue
        imported = "imported" if _imports_tensorflow(command, env) else "no"
        verdict = "met" if median[label] <= _GOAL_S else "MISSED"
        print(f"{label:<42} {median[label]:>8.3f} {median[label] / limit:>8.1f}  {imported:<10} {verdict}")


if __name__ == "__main__":
    app.run(main)
