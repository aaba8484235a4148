"""GPU figures on Keras' JAX backend, for machines with JAX and no TensorFlow (issue 19). One call, < 10 min.

  KERAS_BACKEND=jax python benchmarks/gpu_jax_check.py --output gpu_jax.jsonl
  KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/gpu_jax_check.py --preset smoke --batches 2 \\
      --steps 2 --synthesis 32x64x64 --matmul 256 --conv 8 --output cpu.jsonl     # the test suite's CPU run

Imports no TensorFlow (the blocks are synthetic, in memory). Writes one JSON line per figure:
- ``peak``: a large bfloat16 matmul and a large float32 / bfloat16 conv3d, timed here: the limits;
- ``train``: the preset's train step (ConditionalGAN, D then G, as cgan-ct-train runs it) for each batch
  size and precision (float32; mixed_bfloat16): blocks/s, estimated FLOP/s (3 x the forward convolutions
  of G once and D three times a block), that as a share of the same run's conv3d peak, peak device memory;
- ``infer``: the generator's forward pass, blocks/s;
- ``synthesis``: the streamed cascade (cgan_ct.synthesis.cascade, untrained depixelation stages of the
  preset: memory does not depend on the weights) for each volume shape, seconds and peak device memory.
Peak device memory is the allocator's peak so far in the process (JAX cannot reset it): figures are run
smallest first, so a peak that stays put is one that does not grow. Goals (issue 19): >= 4,000 blocks/s
at batch 50 on one H200 with the step >= 40 % of the conv3d peak; synthesis of 512 x 512 x 256 < 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # so the peak is what was used
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from cgan_ct.config import model_config  # noqa: E402
from cgan_ct.model.build import build_gan  # noqa: E402
from cgan_ct.model.networks import build_generator, conv_flops_per_block  # noqa: E402
from cgan_ct.runtime import cpu_model  # noqa: E402

WARMUP_STEPS = 2  # fitted before the timed steps: tracing and XLA compilation


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (which blocks until done) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def peak_memory_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def peaks(matmul: int, conv_batch: int, repeats: int) -> list[dict]:
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (matmul, matmul), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    seconds = _timed(lambda: mm(a).block_until_ready(), repeats)
    rows = [{"figure": "peak", "op": f"matmul bf16 {matmul}^2", "flops_per_s": 2 * matmul**3 / seconds}]
    for dtype in (jnp.float32, jnp.bfloat16):
        x = jax.random.normal(key, (conv_batch, 64, 64, 64, 64), dtype)
        k = jax.random.normal(key, (3, 3, 3, 64, 64), dtype)
        conv = jax.jit(
            lambda x, k: jax.lax.conv_general_dilated(
                x, k, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
            )
        )
        seconds = _timed(lambda x=x, k=k, conv=conv: conv(x, k).block_until_ready(), repeats)
        flops = 2 * conv_batch * 64**3 * 27 * 64 * 64
        name = np.dtype(dtype).name
        rows.append({"figure": "peak", "op": f"conv3d {name} {conv_batch}x64^3x64->64", "flops_per_s": flops / seconds})
    return rows


def train_flops_per_block(config) -> int:
    """3 x forward convolutions (forward + two backward): G once, D on real and fake and once more for G's loss."""
    from cgan_ct.model.networks import build_discriminator

    return 3 * (conv_flops_per_block(build_generator(config)) + 3 * conv_flops_per_block(build_discriminator(config)))


def build(preset: str, batch: int, precision: str, steps: int):
    """The preset's compiled ConditionalGAN in ``precision`` (float32, bfloat16; never ``auto``: build_gan sets
    its dtype policy), its schedule (if any) ``steps`` long."""
    return build_gan(model_config(preset, global_batch_size=batch, precision=precision), seed=0, total_steps=steps)


def train_rows(preset: str, batches, precisions, steps: int, conv_peak: dict) -> list[dict]:
    rows = []
    for precision in precisions:
        for batch in batches:
            config = model_config(preset, global_batch_size=batch)
            gan = build(preset, batch, precision, WARMUP_STEPS + steps)
            n = config.block_size
            rng = np.random.default_rng(0)
            x = rng.uniform(-1, 1, (batch * max(steps, WARMUP_STEPS), n, n, n, 1)).astype(np.float32)
            y = np.clip(x + 0.05, -1, 1).astype(np.float32)
            warmup, timed = WARMUP_STEPS * batch, steps * batch
            gan.fit(x[:warmup], y[:warmup], batch_size=batch, epochs=1, verbose=0, shuffle=False)  # compile
            start = time.perf_counter()
            gan.fit(x[:timed], y[:timed], batch_size=batch, epochs=1, verbose=0, shuffle=False)
            seconds = time.perf_counter() - start
            blocks_per_s = batch * steps / seconds
            flops = train_flops_per_block(config) * blocks_per_s
            peak = conv_peak["bfloat16" if precision == "bfloat16" else "float32"]
            rows.append(
                {
                    "figure": "train",
                    "preset": preset,
                    "precision": precision,
                    "batch": batch,
                    "steps": steps,
                    "blocks_per_s": blocks_per_s,
                    "flops_per_s_estimated": flops,
                    "share_of_conv3d_peak": flops / peak,
                    "peak_memory_bytes": peak_memory_bytes(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _generator_fn(preset: str):
    config = model_config(preset, residual_base="cubic")
    generator = build_generator(config)
    trainable = [v.value for v in generator.trainable_variables]
    free = [v.value for v in generator.non_trainable_variables]

    @jax.jit
    def run(condition, noise):
        return generator.stateless_call(trainable, free, [condition, noise], training=False)[0]

    return config, run


def infer_row(preset: str, batch: int, repeats: int) -> dict:
    config, run = _generator_fn(preset)
    n = config.block_size
    condition = jnp.zeros((batch, n, n, n, 1), jnp.float32)
    seconds = _timed(lambda: run(condition, condition).block_until_ready(), repeats)
    return {"figure": "infer", "preset": preset, "batch": batch, "blocks_per_s": batch / seconds}


def synthesis_rows(preset: str, shapes, batch: int) -> list[dict]:
    """The streamed cascade from a coarse volume (1/8 per axis in-plane and in z: three x2 stages)."""
    from cgan_ct.ops.pyramid import level_shape
    from cgan_ct.synthesis.cascade import cascade_stream

    config, run = _generator_fn(preset)
    key = jax.random.PRNGKey(1)

    def predictor(blocks_hu):
        normalized = jnp.asarray(blocks_hu, jnp.float32) / 2047.5 + (1024.0 / 2047.5 - 1.0)
        noise = jax.random.uniform(key, normalized.shape, jnp.float32, -1.0, 1.0)
        return np.asarray((run(normalized, noise) + 1.0) * 2047.5 - 1024.0)

    rows = []
    for shape in shapes:
        levels = [level_shape(shape, j) for j in (2, 1, 0)]
        coarse = np.random.default_rng(0).uniform(-1024, 1000, level_shape(shape, 3)).astype(np.float32)
        start = time.perf_counter()
        slices = sum(
            len(slab) for slab in cascade_stream(coarse, [(predictor, config.block_size)] * 3, levels, batch_size=batch)
        )
        rows.append(
            {
                "figure": "synthesis",
                "preset": preset,
                "shape_zyx": list(shape),
                "slices_out": slices,
                "seconds": time.perf_counter() - start,
                "peak_memory_bytes": peak_memory_bytes(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batches", default="50,200")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--synthesis", default="128x512x512,256x512x512", help="z x y x x shapes")
    parser.add_argument("--matmul", type=int, default=8192)
    parser.add_argument("--conv", type=int, default=16, help="batch of the 64^3 x 64-channel conv3d peak")
    parser.add_argument("--infer_batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="gpu_jax_check.jsonl")
    args = parser.parse_args(argv)
    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    device = jax.devices()[0]
    rows = [
        {
            "figure": "machine",
            "device": f"{device.platform}: {getattr(device, 'device_kind', '')}",
            "devices": len(jax.devices()),
            "jax": jax.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
            "cpu": cpu_model(),
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    rows += peaks(args.matmul, args.conv, args.repeats)
    for row in rows[1:]:
        print(json.dumps(row), flush=True)
    conv_peak = {
        name: next(r["flops_per_s"] for r in rows if r.get("op", "").startswith(f"conv3d {name}"))
        for name in ("float32", "bfloat16")
    }
    batches = [int(b) for b in args.batches.split(",")]
    rows += train_rows(args.preset, batches, args.precisions.split(","), args.steps, conv_peak)
    rows.append(infer_row(args.preset, args.infer_batch, args.repeats))
    print(json.dumps(rows[-1]), flush=True)
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.synthesis.split(",")]
    rows += synthesis_rows(args.preset, shapes, args.infer_batch)
    pathlib.Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
