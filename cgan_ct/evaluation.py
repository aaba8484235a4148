"""Per-patient evaluation of trained models against baselines: the rows of the paper's Tables I and II."""

from __future__ import annotations

import dataclasses

import numpy as np

from cgan_ct.baselines import baselines, seam_score
from cgan_ct.inference import BlockModel, infer_volume
from cgan_ct.lung import lung_mask
from cgan_ct.metrics import quality
from cgan_ct.volume import Volume


@dataclasses.dataclass
class TaskResult:
    """One volume, one task: the volumes to draw and the table rows."""

    task: str
    original: np.ndarray
    condition: np.ndarray
    generated: np.ndarray
    rows: list[dict]


def evaluate_volume(volume: Volume, task: str, model: BlockModel, overlap: float = 0.25, seed: int = 0) -> TaskResult:
    """Model and baselines against the original, whole volume and lungs; seam score of the model's output."""
    condition, generated = infer_volume(volume, model, task, overlap=overlap, seed=seed)
    lungs = lung_mask(volume.hu, volume.spacing_mm)
    methods = {"model": generated.hu.astype(np.float32), **baselines(task, condition.hu)}
    rows = []
    for method, output in methods.items():
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
                    "seam_score": seam_score(output, model.block_size) if region == "volume" else float("nan"),
                }
            )
    return TaskResult(task, volume.hu, condition.hu, generated.hu, rows)
