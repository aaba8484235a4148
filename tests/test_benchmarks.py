"""Every script in benchmarks/ and experiments/ runs once, tiny, so none can rot; every GAN builder there
builds every preset.

Each script runs in a subprocess with tiny arguments and must exit 0 and print its figures. The inputs are
synthetic: small phantom chests (cgan_ct.demo.phantom) written as DICOM series under the names of the shared
series the scripts read by default, so none needs ../shared/data/ct (the recorded runs read it), and a copy of
a shipped model for the script that rewrites model cards. Most of a tiny run is one core importing, tracing and
compiling, so the runs go two at a time in the background from the start of the module (the builders train
their steps here meanwhile), and each test waits for its own (whole-file scheduling, as ``make test``'s
``--dist loadfile``, keeps them on one worker). The figures of a tiny run mean nothing and are not checked,
only that they were printed (STYLE.md 12: never timed assertions).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from cgan_ct import write_dicom_series
from cgan_ct.config import PRESETS, model_config
from cgan_ct.demo.phantom import make_phantom
from tests.conftest import GRID_CELL, REPO, require_tool

BENCHMARKS = REPO / "benchmarks"  # timers: a ratio against a limit measured in the same run
EXPERIMENTS = REPO / "experiments"  # the release and A/B scripts: quality on held-out patients
# written, with their own tests, apart from this file
NOT_HERE = {"serving_bench.py", "cli_startup_bench.py"}
# run tiny by another test file: script -> that file (which must name it)
ELSEWHERE = {
    "gpu_jax_check.py": "tests/test_jax_backend.py",  # its JAX-only-machine run, beside the JAX worker
    "cohort.py": "tests/test_cohort.py",  # the split the training scripts default to (a module, not a script)
    "memorization_grid.py": "tests/test_memorization.py",  # memorization_bench.py's reference (a module)
    "heldout.py": "tests/test_cohort.py",  # the experiments' scoring, tables and goal lines (a module)
    "release.py": "tests/test_cohort.py",  # the shipped recipe and a run's card facts (a module)
    "stage_augment.py": "tests/test_synthesis.py",  # needs a cascade's run folder: the tiny cascade there
    "calibrate_coarse.py": "tests/test_synthesis.py",  # needs a cascade and its run's generator: the tiny cascade
    "calibrate_output.py": "tests/test_synthesis.py",  # needs a trained cascade: the tiny cascade
    "fit_grain.py": "tests/test_synthesis.py",  # needs a trained cascade: the tiny cascade
    "record_placements.py": "tests/test_synthesis.py",  # needs a trained cascade: the tiny cascade
}
# the shared series' names: the scripts' defaults read these from --ct_dir
TRAINING_SERIES, HELDOUT_SERIES = "lung-pet-ct-dx-A0001", "lidc-idri-0001"
CHESTS = (TRAINING_SERIES, "covid-ct-md-P001", "covid-ct-md-cap001", HELDOUT_SERIES, "covid-ct-md-normal001")
SHIPPED = "depixelate"  # its card's first held-out series is one of CHESTS


# Each script's GAN builder (preset, its schedule's length, ...) -> a compiled ConditionalGAN. A schedule that
# needs a length (the cpu preset's cosine) makes build_gan refuse a build without one (issue 28): every preset
# through every builder, so a benchmark cannot build only the preset its tiny run uses.
BUILDERS = {
    "model_bench": lambda module, preset: module.build(preset, 1),
    "step_profile": lambda module, preset: module.build(preset, 1),
    "pipeline_bench": lambda module, preset: module.build(preset, 1),
    "backend_bench": lambda module, preset: module.build(preset, 1, batch=1),
    "gpu_jax_check": lambda module, preset: module.build(preset, 1, "float32", 1),
}
_LOADED: dict[str, object] = {}


def _load(script: str):
    """benchmarks/SCRIPT.py as a module, for its builder. The absl flags it defines are removed again (the
    scripts share names such as --batch) and the environment restored (gpu_jax_check.py sets KERAS_BACKEND=jax
    for its own runs; this process stays on TensorFlow, which the builders run on as well)."""
    if script not in _LOADED:
        if script == "gpu_jax_check" and importlib.util.find_spec("jax") is None:
            pytest.skip("JAX not installed (.[jax]; the test extra has it)")
        before, environment = set(flags.FLAGS), dict(os.environ)
        spec = importlib.util.spec_from_file_location(f"benchmark_{script}", BENCHMARKS / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        finally:
            for name in set(flags.FLAGS) - before:
                delattr(flags.FLAGS, name)
            os.environ.clear()
            os.environ.update(environment)
        _LOADED[script] = module
    return _LOADED[script]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("script", BUILDERS)
def test_every_builder_builds_every_preset_and_trains_a_step(script, preset):
    gan = BUILDERS[script](_load(script), preset)
    n = model_config(preset).block_size
    condition = np.random.default_rng(0).uniform(-1, 1, (1, n, n, n, 1)).astype(np.float32)
    target = np.clip(condition + 0.1, -1, 1)
    logs = gan.train_step((tf.constant(condition), tf.constant(target)))  # eager: one step, no tracing
    assert int(gan.g_optimizer.iterations) == int(gan.d_optimizer.iterations) == 1
    assert all(np.isfinite(float(value)) for value in logs.values()), logs


@dataclasses.dataclass(frozen=True)
class Smoke:
    """A tiny run of one or more scripts: ``command`` and ``env`` (placeholders ``{python}``, ``{venv}``,
    ``{out}`` and one per input, filled in at run time), the regular expression of the line with its figures,
    and the inputs it reads (INPUTS), each made once, by the first run that needs it."""

    covers: tuple[str, ...]
    command: tuple[str, ...]
    figures: str
    inputs: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    slow: bool = False
    modules: tuple[str, ...] = ()  # optional packages it needs (the test extra has them)
    tools: tuple[str, ...] = ()  # programs it needs (make system-deps installs them)

    def missing(self) -> list[str]:
        return [m for m in self.modules if importlib.util.find_spec(m) is None] + [
            t for t in self.tools if shutil.which(t) is None
        ]


def _folder(name: str) -> str:
    return "experiments" if (EXPERIMENTS / name).exists() else "benchmarks"


def _script(name: str, args: str, figures: str, inputs: tuple[str, ...] = ("ct",), **kwargs) -> Smoke:
    command = ("{python}", f"{_folder(name + '.py')}/{name}.py", *args.split())
    return Smoke((f"{name}.py",), command, figures, inputs, **kwargs)


def _shell(name: str, covers: tuple[str, ...], args: str, env: str, figures: str, inputs=(), **kwargs) -> Smoke:
    pairs = tuple(tuple(pair.split("=", 1)) for pair in env.split())
    command = ("bash", f"benchmarks/{name}.sh", *args.split())
    return Smoke((f"{name}.sh", *covers), command, figures, inputs, pairs, **kwargs)


SERIES = f"--series_dir {{ct}}/{HELDOUT_SERIES}"
SPLIT = f"--ct_dir {{ct}} --train {TRAINING_SERIES} --heldout {HELDOUT_SERIES}"
SMOKES = {  # run two at a time, the longest (LONGEST_SMOKES) first: they finish sooner
    "synthesis_real": _shell(  # its reader study's screenshot drives Chromium
        "synthesis_real",
        (),
        "{out}",
        f"SMOKE=1 SHARED_CT={{ct}} SMOKE_SERIES={TRAINING_SERIES},{HELDOUT_SERIES} VENV={{venv}}",
        r"report exit status [034] \(",
        ("ct",),
        slow=True,
        modules=("selenium",),
        tools=("chromium", "chromedriver"),
    ),
    "backend_bench": _script(
        "backend_bench", "--preset smoke --steps 1 --batch 1", r"jax / tensorflow \d", (), slow=True, modules=("jax",)
    ),
    "memorization_bench": _script(
        "memorization_bench",
        "--ct_dir {ct192} --size 192 --copy_slices 32",
        r"Coarse level .* control flagged \d+ of \d+",
        ("ct192",),
        slow=True,
    ),
    "autoencode_identity": _script(
        "autoencode_identity",
        f"--ct_dir {{ct}} --train {TRAINING_SERIES} --steps 2 --probe 2 --batch 1 --air_keep 1 --work_dir {{out}} "
        "--variants lr=1e-3,sched=const;skip=1,out=linear,noz=1",
        r'"variant": "skip=1,out=linear,noz=1", "seconds": \d+, "l1_hu_psnr_db": \{"2": \[',
        slow=True,
    ),
    "lowdose_eval": _script(
        "lowdose_eval",
        f"{SPLIT} --steps 1 --slices 2 --tune_slices 1 --noise_scale_min 0 --milder_doses 0.9 --work_dir {{out}} "
        "--into {out}/into",
        rf"{HELDOUT_SERIES}: model [\d.]+ dB / SSIM [\d.]+, (bm3d|non_local_means) [\d.]+ dB"
        rf"[\s\S]*{HELDOUT_SERIES} at dose 0.9: model [\d.]+ / input"
        r"[\s\S]*model and card: \S+/into/lowdose",  # the card rendered as every shipped card (model_card.py)
        slow=True,
        modules=("bm3d",),
    ),
    "train_pretrained": _script(  # --into: never the package's own models
        "train_pretrained",
        f"{SPLIT} --steps 1 --models depixelate --work_dir {{out}} --into {{out}}/into",
        r"model [\d.]+ dB / SSIM [\d.]+, tricubic",
        slow=True,
    ),
    "gpu_synthesis": _shell(
        "gpu_synthesis",
        ("synthesis_bench.py",),
        "",
        "SMOKE=1 OUT={out} PYTHON={python}",
        r'"blocks_per_s": [\d.]+, "limit_blocks_per_s": [\d.]+, "ratio_to_limit"',
    ),
    "step_profile": _script(
        "step_profile",
        "--preset smoke --batch 1 --seconds 0 --precisions float32,bfloat16 --conv 1 --conv_edge 8 "
        "--output {out}/profile.json",
        r"(?m)whole train step +[\d.]+ ms[\s\S]*^  bfloat16 +[\d.]+ \| +[\d.]+ +[\d.]+ +\d+% \|",
    ),
    "gpu_check": _shell(
        "gpu_check",
        ("model_bench.py", "peaks.py"),  # peaks.py: the limits model_bench.py and step_profile.py import
        "",
        "SMOKE=1 OUT={out} PYTHON={python}",
        r"(?m)^smoke +G [\d.]+ M params[\s\S]*^smoke +float32 +\| train +[\d.]+ blocks/s .* inference +[\d.]+ "
        r"blocks/s[\s\S]*^smoke +bfloat16 +\| train +[\d.]+ blocks/s",
    ),
    "recipe_ab": _script(
        "recipe_ab",
        f"{SPLIT} --steps 1 --slices 2 --variants cpu+steps2+filters4+depth2 --output_dir {{out}} --texture",
        r"cpu\+steps2\+filters4\+depth2: trained in [\d.]+ s[\s\S]*"
        r"\| model \(cpu\+steps2\+filters4\+depth2\) \| volume \| [\d.]+[\s\S]*texture against the real"
        r"[\s\S]*\| model \(cpu\+steps2\+filters4\+depth2\) \| [\d.-]+ \| [\d.-]+ \| [\d.]+ \| "
        + GRID_CELL
        + r" \| [\d.]+ \|"
        r"[\s\S]*\| condition \| [\d.-]+ \| [\d.-]+ \| [\d.]+ \| " + GRID_CELL + r" \| [\d.]+ \|",
    ),
    "coarse_ab": _script(  # issue 33: the coarse GAN's anti-collapse A/B, its diversity curve per variant
        "coarse_ab",
        f"--ct_dir {{ct}} --train {TRAINING_SERIES},covid-ct-md-P001 --steps 2 --checks 1 "
        "--variants base+color+df16+scale0.1+shift20+ema0.9+mb1 --output_dir {out}",
        r"base\+color\+df16\+scale0\.1\+shift20\+ema0\.9\+mb1: real pairs [\d.]+; draws 2: [\d.]+",
    ),
    "stage_texture": _script(  # issue 33: each stage of the shipped cascade at its level, on held-out input
        "stage_texture",
        f"--ct_dir {{ct}} --heldout {HELDOUT_SERIES} --slices 4",
        r"stage2 \(level 3 -> 2, 1 held-out series\)[\s\S]*stage0 \(level 1 -> 0[\s\S]*"
        r"\| model \| [\d.-]+ \| [\d.-]+ \| [\d.]+ \| " + GRID_CELL + r" \| [\d.]+ \|",
    ),
    "level_texture": _script(  # issue 33: where the synthesis loses texture, level by level, against real
        "level_texture",
        f"--ct_dir {{ct}} --heldout {HELDOUT_SERIES} --seeds 0 --slices 16",
        # the small chests have no uniform soft tissue at 512 x 512: "-" where no patch fits
        r"\| 3 \| 8 \| synthetic \|[\s\S]*\| 0 \| 32 \| real \| (-|[\d.]+ \([\d.]+-[\d.]+\)) \| (-|[\d.]+ )",
    ),
    "diversity_levels": _script(  # issue 33: where synthetic volumes' likeness comes from, level by level
        "diversity_levels",
        f"--ct_dir {{ct}} --real {TRAINING_SERIES},{HELDOUT_SERIES} --seeds 0,1 --slices 8",
        r"\| level 3 \(coarse\) \| 2 \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+[\s\S]*\| grained \| 2 \| "
        r"[\d.]+[\s\S]*\| real \(2 series\) \| 2 \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+",
    ),
    "frd_field_of_view": _script(  # issue 33: FRD of real series resampled as a placement would (a control)
        "frd_field_of_view",
        f"--ct_dir {{ct}} --training {','.join(CHESTS[:3])} --heldout {HELDOUT_SERIES} --factors 1.15 "
        "--slices_per_volume 4 --size 64",
        r"\| as read \| [\d.]+ \| 1\.00x \| [\d.]+ \([\d.]+-[\d.]+\) \|[\s\S]*"
        r"\| field of view x 1\.15 \| [\d.]+ \| [\d.]+x \| [\d.]+ \(",
        modules=("radiomics",),
    ),
    "cell_edges": _script(  # issue 33: the grid of cells a cascade leaves, against real series (none)
        "cell_edges",
        f"--volumes {{ct}}/{HELDOUT_SERIES} --ct_dir {{ct}} --heldout {HELDOUT_SERIES} --periods 2,8 --z_periods 8",
        r"\| source \| volume \| x2 \| x8 \| z8 \|[\s\S]*"
        r"\| real \| mean \(range\) \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+ \([^|]*\) \| [\d.]+ \(",
    ),
    "elastic_sampling": _script(  # issue 33: what reading an elastically deformed block does to its texture
        "elastic_sampling",
        f"--ct_dir {{ct}} --heldout {HELDOUT_SERIES} --levels 0,1 --slices 4",
        r"level 1 +noise_preserving: noise [\d.-]+, frequency [\d.-]+, edges [\d.]+",
    ),
    "ship_synthesis": _script(  # --into: never the package's own models
        "ship_synthesis",
        "--cascade pretrained:synthesis --report {synthesis_report} --into {out}/into --slices 8",
        r"# Model card: `pretrained:synthesis`[\s\S]*DICOM series \(and its NIfTI\) in \d+ s",
        ("synthesis_report",),
    ),
    "precision_hu": _script(
        "precision_hu",
        f"--ct_dir {{ct}} --scans {HELDOUT_SERIES} --models {SHIPPED} --slices 4 --crop 48",
        r"goal (met|missed): worst mean [\d.]+ HU, worst max \d+ HU",
    ),
    "pipeline_bench": _script(
        "pipeline_bench",
        f"{SERIES} --presets smoke --seconds 0 --batch 1 --elastic_voxels 2",
        r"pipeline depixelate, elastic 2: +[\d.]+ blocks/s[\s\S]*"
        r"pipeline depixelate, elastic 2 noise_preserving: +[\d.]+ blocks/s",
    ),
    "infer_bench": _script("infer_bench", f"{SERIES} --preset smoke --batch 4", r"ratio = [\d.]+"),
    "infer_bench_archive": _script(  # issue 34: cgan-ct-infer over an archive against one process a scan
        "infer_bench",
        "--archive 2 --slices 2 --ct_dir {ct} --batch 4",
        r"speed-up = [\d.]+[\s\S]*beam / local = [\d.]+",
    ),
    "tune_baselines": _script(
        "tune_baselines",
        f"--ct_dir {{ct}} --train {TRAINING_SERIES} --slices 1 --methods gaussian,non_local_means",
        r'"non_local_means": \{"sigma_scale"',
    ),
    "model_cards": _script(  # --into: a copy, never the package's own models
        "model_cards",
        f"--into {{shipped}} --models {SHIPPED} --ct_dir {{ct}}",
        rf"{SHIPPED}: input [\d.]+ dB, model [\d.]+ dB, best classical \w+ [\d.]+ dB",
        ("ct", "shipped"),
    ),
    "noise_levels": _script(
        "noise_levels",
        f"--ct_dir {{ct}} --series {HELDOUT_SERIES} --slices 8 --doses 1,0.5",
        rf"{HELDOUT_SERIES} +\w+ +[\d.]+ mm +[\d.]+ HU +[\d.]+ HU",
    ),
    "dose_strength": _script(  # one simulated dose to choose on, the held-out one at full dose (w = 0)
        "dose_strength",
        f"--ct_dir {{ct}} --tune {TRAINING_SERIES} --heldout {HELDOUT_SERIES} --slices 2 "
        "--tune_doses 0.9 --doses 1 --gammas 1,2",
        r"chosen gamma [\d.]+ \(worst [-+][\d.]+ dB[\s\S]*never worse than its input when told the dose: yes",
    ),
    "convert_bench": _script("convert_bench", f"{SERIES} --repeats 1 --lowdose", r"ratio lowdose / convert += [\d.]+"),
    "read_volume_bench": _script(
        "read_volume_bench", f"{SERIES} --repeats 1", r"ratio time +read_volume / limit = [\d.]+"
    ),
}


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {p.name for folder in (BENCHMARKS, EXPERIMENTS) for p in folder.iterdir() if p.suffix in (".py", ".sh")}
    scripts -= NOT_HERE
    both = {p.name for p in BENCHMARKS.iterdir()} & {p.name for p in EXPERIMENTS.iterdir()}
    assert not both, f"one name in both folders: {sorted(both)}"
    covered = {name for smoke in SMOKES.values() for name in smoke.covers}
    assert scripts - covered - set(ELSEWHERE) == set(), "add a tiny run of these to SMOKES"
    assert covered <= scripts, "SMOKES names a script that is gone"
    for script, test_file in ELSEWHERE.items():
        text = (REPO / test_file).read_text()
        assert script in text or f'benchmark_module("{script[:-3]}")' in text, f"{test_file} no longer runs {script}"


def _write_chests(folder: pathlib.Path, size: int, slices: int) -> pathlib.Path:
    folder.mkdir(parents=True)
    for seed, name in enumerate(CHESTS):
        write_dicom_series(make_phantom(seed, slices=slices, size=size), folder / name)
    return folder


def _copy_shipped(folder: pathlib.Path) -> pathlib.Path:
    shutil.copytree(REPO / "cgan_ct" / "model" / "pretrained_models" / SHIPPED, folder / SHIPPED)
    return folder


def _synthesis_summary(folder: pathlib.Path) -> pathlib.Path:
    """A synthesis report's summary.json, as cgan-ct-synthesis-report writes it (goals and their figures)."""
    folder.mkdir(parents=True)
    goal = "memorization: positive controls flagged, no synthetic block flagged"
    summary = {"goals": {goal: True}, "goal_figures": {goal: "0 of 10 flagged; controls 1 of 1"}}
    summary.update(synthetic_volumes=2, synthetic_shapes=[[8, 512, 512]])
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


# the longest runs, longest first (their waits in a two-worker suite: 133, 61, 58, 37 s, 2026-12-07)
LONGEST_SMOKES = ("synthesis_real", "infer_bench_archive", "coarse_ab", "ship_synthesis")
assert set(LONGEST_SMOKES) <= set(SMOKES)

INPUTS = {
    "ct": lambda folder: _write_chests(folder, 64, 24),  # five small chests under the shared series' names
    # the coarse memorization check's positive control needs 168 voxels in-plane and 56 slices
    "ct192": lambda folder: _write_chests(folder, 192, 64),
    "shipped": _copy_shipped,  # a copy of one shipped model (model_cards.py rewrites its card)
    "synthesis_report": _synthesis_summary,
}


class _Runs:
    """The selected smoke runs, started two at a time in the background; ``result(name)`` waits for one."""

    def __init__(self, names: list[str], root: pathlib.Path):
        self.root, self._lock, self._inputs = root, threading.Lock(), {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
        order = [*LONGEST_SMOKES, *(name for name in SMOKES if name not in LONGEST_SMOKES)]
        self._futures = {name: self._pool.submit(self._run, name) for name in order if name in names}

    def _input(self, kind: str) -> str:
        with self._lock:
            if kind not in self._inputs:
                self._inputs[kind] = INPUTS[kind](self.root / kind)
            return str(self._inputs[kind])

    def _run(self, name: str) -> tuple[int, str, float]:
        smoke, out = SMOKES[name], self.root / "out" / name
        out.mkdir(parents=True)
        values = {"python": sys.executable, "venv": str(pathlib.Path(sys.executable).parents[1]), "out": str(out)}
        values.update({kind: self._input(kind) for kind in smoke.inputs})
        command = [part.format(**values) for part in smoke.command]
        env = {**os.environ, **{key: value.format(**values) for key, value in smoke.env}}
        start = time.monotonic()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - start

    def result(self, name: str) -> tuple[int, str, float]:
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module", autouse=True)
def smoke_runs(request, tmp_path_factory):
    """Starts the runs this session selected, before any test of the module waits (the builders run meanwhile)."""
    names = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "name" in item.callspec.params
    ]
    names = [name for name in names if not SMOKES[name].missing()]  # their tests say what is missing
    runs = _Runs(names, tmp_path_factory.mktemp("benchmarks"))
    yield runs
    runs.close()


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if smoke.slow else []) for name, smoke in SMOKES.items()]
)
def test_script_runs_tiny_and_prints_its_figures(name, smoke_runs):
    for tool in SMOKES[name].tools:
        require_tool(tool)  # skips, or fails in CI
    for module in SMOKES[name].modules:
        pytest.importorskip(module, reason=f"{module} is not installed (the test extra has it)")
    code, output, seconds = smoke_runs.result(name)
    print(f"{', '.join(SMOKES[name].covers)}: {seconds:.1f} s")
    assert code == 0, output[-4000:]
    assert re.search(SMOKES[name].figures, output), output[-4000:]
