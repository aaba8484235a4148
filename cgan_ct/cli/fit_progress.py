"""A Keras callback that draws training progress with cgan_ct.cli.progress.ProgressBar."""

from __future__ import annotations

import time

import keras

from cgan_ct.cli.progress import ProgressBar


class FitProgress(keras.callbacks.Callback):
    """Redraws ``bar`` after every batch: steps done out of ``steps``, or, with
    ``seconds``, seconds spent out of a time budget; shows the named logs."""

    def __init__(self, label: str, steps: int | None = None, seconds: float | None = None, show=("g_l1", "d_loss")):
        super().__init__()
        if (steps is None) == (seconds is None):
            raise ValueError("give steps or seconds")
        self.bar = ProgressBar(int(steps if steps is not None else seconds), label)
        self.seconds, self.show, self.steps_done = seconds, show, 0
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done += 1
        logs = logs or {}
        counts = {"step": self.steps_done, **{k: f"{float(logs[k]):.4f}" for k in self.show if k in logs}}
        if self.seconds is None:
            self.bar.update(min(self.steps_done, self.bar.total), **counts)
        else:
            self.bar.update(min(int(time.monotonic() - self.start), self.bar.total - 1), **counts)

    def on_train_end(self, logs=None):
        self.bar.update(self.bar.total, step=self.steps_done)
