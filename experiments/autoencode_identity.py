"""How fast does the generator learn the identity? (issue 31, item 6: an autoencoder that reproduces its input)

  python experiments/autoencode_identity.py [--variants "lr=2e-4,sched=cosine;lr=1e-3"] [--steps 600]
      [--train SERIES,...] [--ct_dir ../shared/data/ct] [--work_dir DIR] [--probe 64] [--batch 8]
      [--air_keep 0.1]

The `cpu` preset's generator without its residual output (what autoencode trains) is trained by L1 alone (no
discriminator: the GAN adds its adversarial term to an L1 weighted 1000, so L1 sets the pace) on the
autoencode pipeline of real training series (cgan-ct-convert defaults, converted once into --work_dir), and
scored every few steps on ``--probe`` fixed training blocks: mean |error| and PSNR in HU (data range 4096, HU
clipped to [-1024, 3071]). The goal of issue 31 (>= 45 dB) needs about 23 HU of RMS error. A variant is
``,``-joined settings; variants are ``;``-joined:

- ``lr=R``: Adam's rate (beta_1 0.5, as the GAN's); ``sched=cosine`` decays it to 0 over the run (the
  cpu preset), ``sched=const`` keeps it;
- ``skip=1``: a long skip, the condition concatenated to the last features before the output convolution;
- ``out=linear``: the output convolution without tanh (clipped to [-1, 1]); default ``out=tanh``;
- ``noz=1``: the noise input Z held at 0 (does learning to ignore Z slow it?).

One JSON line per variant: seconds, and {step: [L1 HU, PSNR dB]}.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list(
    "train", ["lung-pet-ct-dx-A0001", "covid-ct-md-P001"], "Training series (two of cohort.json's training ones)."
)
_VARIANTS = flags.DEFINE_string("variants", "lr=2e-4,sched=cosine;lr=1e-3,sched=const", "See the docstring.")
_STEPS = flags.DEFINE_integer("steps", 600, "Steps per variant.")
_PROBE = flags.DEFINE_integer("probe", 64, "Fixed blocks scored.")
_BATCH = flags.DEFINE_integer("batch", 8, "Blocks per step (the cpu preset's 8).")
_AIR_KEEP = flags.DEFINE_float("air_keep", 0.1, "Share of air blocks kept (the cpu preset's content sampling).")
_WORK = flags.DEFINE_string("work_dir", "/tmp/cgan-ct-autoencode-identity", "Where the dataset is converted.")
_MARKS = (100, 200, 400, 600, 1200, 1800, 2400)
_KNOWN = {"lr", "sched", "skip", "out", "noz"}


def _parse(variant: str) -> dict:
    settings = dict(part.split("=", 1) for part in variant.split(",") if part)
    unknown = set(settings) - _KNOWN
    if unknown:
        raise app.UsageError(f"variant {variant!r}: unknown settings {sorted(unknown)}; known: {sorted(_KNOWN)}")
    return settings


def _generator(config, settings: dict):
    import keras
    import tensorflow as tf
    from keras import layers

    from cgan_ct.model.networks import build_generator

    generator = build_generator(config)
    if settings.get("skip") != "1" and settings.get("out", "tanh") == "tanh":
        return generator
    features = generator.get_layer("dec0_act").output
    if settings.get("skip") == "1":
        features = layers.Concatenate(name="long_skip")([features, generator.inputs[0]])
    linear = settings.get("out") == "linear"
    output = layers.Conv3D(1, 1, activation=None if linear else "tanh", dtype="float32", name="out")(features)
    if linear:
        output = layers.Lambda(lambda t: tf.clip_by_value(t, -1.0, 1.0), name="clip")(output)
    return keras.Model(generator.inputs, output)


def _train(variant: str, dataset, probe, probe_hu, mapping, config) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from cgan_ct.constants import CLIP_HU
    from cgan_ct.data.input_pipeline import PipelineOptions, make_dataset
    from cgan_ct.inference.metrics import psnr_db

    settings = _parse(variant)
    keras.utils.set_random_seed(0)
    generator = _generator(config, settings)
    rate = float(settings.get("lr", 2e-4))
    if settings.get("sched", "cosine") == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, _STEPS.value)
    optimizer = keras.optimizers.Adam(rate, beta_1=0.5)
    z_scale = 0.0 if settings.get("noz") == "1" else 1.0
    options = PipelineOptions(air_keep=_AIR_KEEP.value)
    batches = iter(make_dataset(dataset, "train", "autoencode", _BATCH.value, seed=0, options=options).repeat())

    @tf.function
    def step(block):
        noise = tf.random.uniform(tf.shape(block), -1, 1) * z_scale
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(generator([block, noise], training=True) - block))
        weights = generator.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))

    probe_noise = np.random.default_rng(0).uniform(-1, 1, probe.shape).astype("float32") * z_scale
    start, marks = time.monotonic(), {}
    for index in range(1, _STEPS.value + 1):
        block, _ = next(batches)
        step(block)
        if index in _MARKS or index == _STEPS.value:
            out_hu = np.clip(mapping.inverse(generator([probe, probe_noise], training=False).numpy()), *CLIP_HU)
            marks[index] = [round(float(np.mean(np.abs(out_hu - probe_hu))), 1), round(psnr_db(probe_hu, out_hu), 2)]
    return {"variant": variant, "seconds": round(time.monotonic() - start), "l1_hu_psnr_db": marks}


def main(argv: list[str]) -> None:
    del argv
    import numpy as np

    from cgan_ct import runtime
    from cgan_ct.config import conversion_config, model_config
    from cgan_ct.constants import CLIP_HU
    from cgan_ct.data.conversion import convert
    from cgan_ct.data.input_pipeline import PipelineOptions, load_intensity, make_dataset

    variants = [v for v in _VARIANTS.value.split(";") if v]
    for variant in variants:
        _parse(variant)  # refuse a typo before converting anything
    dataset = pathlib.Path(_WORK.value) / "dataset"
    if not (dataset / "manifest.json").exists():
        inputs = [pathlib.Path(_CT.value) / name for name in _TRAIN.value]
        convert(inputs, dataset, conversion_config("cpu", test_fraction=0.0), workers=None)
    mapping = load_intensity(dataset)
    config = model_config("cpu", residual=False, epochs=1)
    options = PipelineOptions(air_keep=_AIR_KEEP.value)
    probes = make_dataset(dataset, "train", "autoencode", _PROBE.value, seed=123, options=options).repeat()
    probe = next(iter(probes))[1].numpy()  # repeated: a small dataset may hold fewer content blocks than --probe
    probe_hu = np.clip(mapping.inverse(probe), *CLIP_HU)
    print(f"cpu: {runtime.status()['cpu']}; series {', '.join(_TRAIN.value)}; {_STEPS.value} steps", flush=True)
    for variant in variants:
        print(json.dumps(_train(variant, dataset, probe, probe_hu, mapping, config)), flush=True)


if __name__ == "__main__":
    app.run(main)
