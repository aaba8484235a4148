"""Per-patient evaluation of trained models against baselines: the rows of the paper's Tables I and II."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from cgan_ct.constants import AIR_HU
from cgan_ct.inference import figures, report
from cgan_ct.inference.baselines import SLOW_BASELINES, baselines, check_available, seam_score, tuned_params
from cgan_ct.inference.inference import BlockModel, infer_volume
from cgan_ct.inference.metrics import quality
from cgan_ct.io.volume import Volume
from cgan_ct.io.volume_reader import read_volume
from cgan_ct.ops.blocks import predict_volume
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.ops.lung import lung_mask

Z_SPREAD_SLICES = 64  # slices (the central ones) the noise spread is measured on: it needs no whole scan
Z_IGNORED_HU = 1.0  # a spread below this: the generator ignores its noise input


@dataclasses.dataclass
class TaskResult:
    """One volume, one task: the volumes to draw and the table rows."""

    task: str
    original: np.ndarray
    condition: np.ndarray
    generated: np.ndarray
    rows: list[dict]
    condition_volume: Volume | None = None
    generated_volume: Volume | None = None
    figure: figures.FigureSlice | None = None  # the slice the figures show, with the best baseline's


def noise_spread_hu(condition_hu: np.ndarray, model: BlockModel, overlap: float, seed: int, first: np.ndarray) -> float:
    """Per-voxel standard deviation of the model's output over two noise draws, in HU, inside the body.

    ``first`` is the output already computed with ``seed``; a second draw (seed + 1) of the central
    ``Z_SPREAD_SLICES`` slices gives the estimate sqrt(mean((a - b)^2) / 2). NaN if no voxel is in the body.
    """
    depth, grid = condition_hu.shape[0], model.tile_grid
    start = max(0, (depth - Z_SPREAD_SLICES) // 2) // grid * grid  # on the pixel grid, as the first pass was
    stop = min(depth, start + Z_SPREAD_SLICES)
    slab = condition_hu[start:stop]
    second = predict_volume(
        slab, model.predictor(seed + 1), model.block_size, overlap, 16, "gaussian", AIR_HU, grid=grid
    )
    inside = body_mask(slab)
    if not inside.any():
        return float("nan")
    difference = first[start:stop].astype(np.float64) - second.astype(np.float64)
    return float(np.sqrt(np.mean(difference[inside] ** 2) / 2.0))


def evaluate_volume(
    volume: Volume,
    task: str,
    model: BlockModel,
    overlap: float = 0.25,
    seed: int = 0,
    skip_baselines=SLOW_BASELINES,
    noise_spread: bool = True,
    baseline_params: dict | None = None,
) -> TaskResult:
    """Model and baselines (but ``skip_baselines``) against the original, whole volume and lungs; seam score;
    and (``noise_spread``) the model's output spread over noise draws, ``z_std_hu`` on its rows.

    The baselines' settings: ``baseline_params``, else those tuned for the model's condition
    (``baselines.TUNED``), else their defaults."""
    condition, generated = infer_volume(volume, model, task, overlap=overlap, seed=seed)
    params = baseline_params if baseline_params is not None else tuned_params(task, model.info.peak, model.info.lowdose)
    z_std = noise_spread_hu(condition.hu, model, overlap, seed, generated.hu) if noise_spread else float("nan")
    lungs = lung_mask(volume.hu, volume.spacing_mm)
    methods = {
        "model": generated.hu.astype(np.float32),
        **baselines(task, condition.hu, skip_baselines, model.info.peak, model.info.factor, params, model.info.pyramid),
    }
    rows = []
    for method, output in methods.items():
        seam = seam_score(output, volume.hu, model.block_size, overlap, model.tile_grid)  # at this tiling's edges
        for region, mask in (("volume", None), ("lungs", lungs if lungs.any() else None)):
            if region == "lungs" and mask is None:
                continue
            q = quality(volume.hu, output, mask)
            rows.append(
                {
                    "patient": volume.patient_key,
                    "volume": volume.volume_id,
                    "task": task,
                    "method": method,
                    "region": region,
                    "psnr_slices_db": q.psnr_slices_db,
                    "ssim_slices": q.ssim_slices,
                    "mae_hu": q.mae_hu,
                    "psnr_volume_db": q.psnr_volume_db,
                    "seam_score": seam if region == "volume" else float("nan"),
                    "z_std_hu": z_std if method == "model" else float("nan"),
                }
            )
    figure = figures.figure_slice(volume.hu, volume.patient_key, task, methods, rows)
    return TaskResult(task, volume.hu, condition.hu, generated.hu, rows, condition, generated, figure)


def evaluate_inputs(
    inputs,
    models: dict,
    output_dir,
    overlap: float = 0.25,
    seed: int = 0,
    progress=None,
    on_result=None,
    skip_baselines=SLOW_BASELINES,
    notes=(),
    noise_spread: bool = True,
) -> list[dict]:
    """Every model on every input: results.csv, report.md and figures/ in ``output_dir``; returns the rows.

    ``models`` maps task -> BlockModel; ``progress(done, total)`` after each (input, task);
    ``on_result(input_index, result)`` receives each TaskResult (e.g. to keep its volumes);
    ``skip_baselines`` names baselines not to run (default: the slow ones, BM3D); ``notes`` are lines
    for the report; ``noise_spread`` measures each model's output spread over noise draws (a second
    inference of up to 64 slices).
    """
    check_available(skip_baselines)  # before a scan is read or a folder made
    out = pathlib.Path(output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rows, total, done = [], len(inputs) * len(models), 0
    for index, path in enumerate(inputs):
        volume = read_volume(path)
        for task, model in models.items():
            result = evaluate_volume(volume, task, model, overlap, seed, skip_baselines, noise_spread)
            rows += result.rows
            figures.write_figures(result.figure, out / "figures", f"{task}_{index:03d}")
            if on_result:
                on_result(index, result)
            done += 1
            if progress:
                progress(done, total)
    report.write_report(rows, out, [*notes, *noise_spread_lines(rows)])
    return rows


def noise_spread_lines(rows: list[dict]) -> list[str]:
    """One sentence per task on whether the model uses its noise input Z."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        spreads = [
            r["z_std_hu"]
            for r in rows
            if r["task"] == task and r["method"] == "model" and r["region"] == "volume" and np.isfinite(r["z_std_hu"])
        ]
        if not spreads:
            continue
        mean = float(np.mean(spreads))
        verdict = (
            "the generator ignores its noise input: in practice it is deterministic"
            if mean < Z_IGNORED_HU
            else "the noise input changes the output"
        )
        lines.append(
            f"Noise input Z ({task}): per-voxel spread over two draws {mean:.2f} HU inside the body "
            f"(mean of {len(spreads)}): {verdict}."
        )
    return lines


def evaluate_no_reference(inputs, models: dict, output_dir, overlap: float = 0.25, seed: int = 0, progress=None):
    """Real scans denoised as they are (no ground truth): noise and edge widths before and after.

    Each model takes each input as its condition (``condition_mode="as_is"``); the measures of
    cgan_ct.inference.no_reference compare input and output on the same regions and edges. Writes
    ``no_reference.csv``, ``no_reference.md`` and a figure per (input, model) in ``output_dir``;
    returns the rows: one per (input, model, measure) with before, after and ratio.
    """
    from cgan_ct.inference import no_reference

    out = pathlib.Path(output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rows, total, done = [], len(inputs) * len(models), 0
    for index, path in enumerate(inputs):
        volume = read_volume(path)
        for task, model in models.items():
            _, generated = infer_volume(volume, model, task, condition_mode="as_is", overlap=overlap, seed=seed)
            measures = no_reference.compare(volume.hu, generated.hu, volume.spacing_mm, seed)
            for name, value in measures.items():
                if name == "edge_points":
                    continue
                rows.append(
                    {"volume": volume.volume_id, "patient": volume.patient_key, "task": task, "measure": name, **value}
                )
            k = figures.figure_slice_index(volume.hu.shape[0])
            figures.before_after_figure(
                volume.hu[k],
                generated.hu[k],
                volume.patient_key,
                task,
                out / "figures" / f"{task}_{index:03d}_as_is.png",
            )
            done += 1
            if progress:
                progress(done, total)
    report.write_csv(
        rows, out / "no_reference.csv", ("volume", "patient", "task", "measure", "before", "after", "ratio")
    )
    (out / "no_reference.md").write_text(no_reference_markdown(rows))
    return rows


def no_reference_markdown(rows: list[dict]) -> str:
    """The rows as a table, and whether each model met "noise halved, edges within 10 %"."""
    lines = [
        "# Real scans denoised as they are: no-reference measures",
        "",
        "Noise: mode of the 6 mm local standard deviation (HU); edges: 10-90 % edge spread width (mm), "
        "the same edges in input and output.",
        "",
        "| volume | task | measure | before | after | after / before |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        values = " | ".join(f"{r[k]:.2f}" for k in ("before", "after", "ratio"))
        lines.append(f"| {r['volume'][:12]} | {r['task']} | {r['measure']} | {values} |")
    lines.append("")
    for volume, task in dict.fromkeys((r["volume"], r["task"]) for r in rows):
        mine = {r["measure"]: r["ratio"] for r in rows if (r["volume"], r["task"]) == (volume, task)}
        noise = mine.get("noise_tissue_hu", float("nan"))
        edges = [v for k, v in mine.items() if k.startswith("edge_") and np.isfinite(v)]
        halved = np.isfinite(noise) and noise <= 0.5
        sharp = bool(edges) and all(abs(v - 1) <= 0.10 for v in edges)
        lines.append(
            f"- {volume[:12]} ({task}): soft-tissue noise x{noise:.2f} ({'halved' if halved else 'not halved'}), "
            f"edge widths x{', x'.join(f'{v:.2f}' for v in edges) or ' -'} "
            f"({'within' if sharp else 'not within'} 10 % of the input's)"
        )
    return "\n".join(lines) + "\n"
