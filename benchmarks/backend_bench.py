"""The train step on Keras' TensorFlow and JAX backends, on this machine's CPU (issue 19, item 5).

  python benchmarks/backend_bench.py [--preset cpu] [--steps 20] [--batch N]

Each backend runs in its own process (Keras picks its backend once): the preset's ConditionalGAN
(``build_gan``: TensorFlow as cgan-ct-train runs it, JAX XLA-compiled) is fitted on the same in-memory
blocks, a warm-up fit of 2 steps first (tracing, compilation), then ``--steps`` steps timed. Prints
blocks/s per backend and JAX's as a ratio of TensorFlow's, with the CPU model. TensorFlow stays the CPU
default unless JAX is faster by more than the run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
WARMUP_STEPS = 2


def _import_project() -> None:
    """cgan_ct importable, and imported first (oneDNN and threads are set before TensorFlow is imported)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import cgan_ct  # noqa: F401


def build(preset: str, steps: int, batch: int | None = None):
    """The preset's compiled ConditionalGAN on this process's backend, its schedule (if any) ``steps`` long."""
    _import_project()
    from cgan_ct.config import model_config
    from cgan_ct.model.build import build_gan

    return build_gan(model_config(preset, global_batch_size=batch), seed=0, total_steps=steps)


def _child(preset: str, steps: int, batch: int | None) -> None:
    import time

    _import_project()
    import keras
    import numpy as np

    from cgan_ct.config import model_config

    config = model_config(preset, global_batch_size=batch)
    batch, n = config.global_batch_size, config.block_size
    gan = build(preset, WARMUP_STEPS + steps, batch)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch * max(steps, WARMUP_STEPS), n, n, n, 1)).astype(np.float32)
    y = np.clip(x + 0.05, -1, 1).astype(np.float32)
    warmup, timed = WARMUP_STEPS * batch, steps * batch
    gan.fit(x[:warmup], y[:warmup], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    gan.fit(x[:timed], y[:timed], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"backend": keras.backend.backend(), "batch": batch, "blocks_per_s": batch * steps / seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.preset, args.steps, args.batch)
        return
    results = {}
    for backend in ("tensorflow", "jax"):
        command = [sys.executable, __file__, "--child", "--preset", args.preset, "--steps", str(args.steps)]
        command += ["--batch", str(args.batch)] if args.batch else []
        env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
        results[backend] = json.loads(out.strip().splitlines()[-1])
    tf_rate, jax_rate = results["tensorflow"]["blocks_per_s"], results["jax"]["blocks_per_s"]
    sys.path.insert(0, str(REPO))
    from cgan_ct.runtime import cpu_model  # imports nothing of TensorFlow

    print(f"cpu: {cpu_model()}; {os.cpu_count()} cores; preset {args.preset}, batch {results['jax']['batch']}")
    ratio = jax_rate / tf_rate
    print(f"tensorflow {tf_rate:.2f} blocks/s | jax {jax_rate:.2f} blocks/s | jax / tensorflow {ratio:.2f}")


if __name__ == "__main__":
    main()
