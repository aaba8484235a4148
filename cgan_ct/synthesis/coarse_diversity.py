"""Mode collapse, watched while the coarse GAN trains (issue 33, item 2).

A coarse generator that collapses draws one body whatever its noise. ``DiversityMonitor`` measures it every
``every`` steps: ``draws`` volumes from fixed seeds, the mean MS-SSIM between every pair of them
(cgan_ct.realism.ms_ssim: 8 axial slices at matched relative heights, HU in the realism window), beside the
same measure between every pair of the real training volumes at that level. Synthetic pairs far above real
pairs (the issue's goal: at most real + 0.05) is collapse; the rows say when it set in, so a run can be
judged by its curve rather than by its last step. The library records; the job prints.
"""

from __future__ import annotations

import keras
import numpy as np

from cgan_ct.config import CoarseConfig
from cgan_ct.ops.intensity import IntensityMapping
from cgan_ct.realism.ms_ssim import pairwise_ms_ssim, scales_for
from cgan_ct.synthesis.coarse_export import CoarseModule

GOAL_MARGIN = 0.05  # issue 33: MS-SSIM between synthetic pairs <= real pairs + 0.05


def measurable(config: CoarseConfig) -> bool:
    """Whether coarse slices of this size hold MS-SSIM's window (an 8 x 8 smoke level does not)."""
    try:
        scales_for((config.size, config.size))
    except ValueError:
        return False
    return True


class DiversityMonitor(keras.callbacks.Callback):
    """Records ``rows`` ({step, synthetic_ms_ssim, real_ms_ssim, gap}) while a ``CoarseGAN`` trains.

    ``real_hu``: the coarse training volumes ([D, S, S] HU); the draws take their median depth. With one
    real volume there are no real pairs: ``real_ms_ssim`` and ``gap`` are None.
    """

    def __init__(
        self,
        mapping: IntensityMapping,
        config: CoarseConfig,
        real_hu: list[np.ndarray],
        every: int,
        draws: int = 4,
        slices: int = 8,
    ):
        super().__init__()
        if every < 1 or draws < 2:
            raise ValueError(f"need every >= 1 and draws >= 2, got {every} and {draws}")
        self.mapping, self.config, self.every, self.draws, self.slices = mapping, config, every, draws, slices
        self.depth = int(np.median([v.shape[0] for v in real_hu]))
        self.real = float(np.mean(pairwise_ms_ssim(real_hu, slices))) if len(real_hu) >= 2 else None
        self.rows: list[dict] = []

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every == 0 or step == self.params.get("steps"):
            self.rows.append(self.measure(step))

    def measure(self, step: int) -> dict:
        """One row: the mean pairwise MS-SSIM of ``draws`` volumes drawn now (seeds 0 .. draws - 1)."""
        module = CoarseModule(self.model.generator, self.mapping, self.config)
        volumes = [module.draw(seed, self.depth) for seed in range(self.draws)]
        synthetic = float(np.mean(pairwise_ms_ssim(volumes, self.slices)))
        gap = None if self.real is None else synthetic - self.real
        return {"step": step, "synthetic_ms_ssim": synthetic, "real_ms_ssim": self.real, "gap": gap}


def diversity_line(row: dict) -> str:
    """A row in words, with the goal's verdict where there are real pairs."""
    text = f"step {row['step']}: MS-SSIM between draws {row['synthetic_ms_ssim']:.3f}"
    if row["real_ms_ssim"] is None:
        return text + " (one training volume: no real pairs to compare)"
    verdict = "within" if row["gap"] <= GOAL_MARGIN else "above"
    return text + f", between real volumes {row['real_ms_ssim']:.3f} ({verdict} real + {GOAL_MARGIN})"
