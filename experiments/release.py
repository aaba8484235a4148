"""What the two release scripts (train_pretrained.py, lowdose_eval.py) share: the shipped models' recipe and the
facts of a training run that a model card records."""

from __future__ import annotations

import dataclasses
import os
import time

# The shipped recipe: the ``cpu`` preset with these changes (issue 31, item 2: a generator of 16 first-level
# filters, 1.25 M parameters, gained 0.2-0.7 dB on every held-out patient over 8 filters, more than a seed's
# spread; float32, as measured, whatever the machine's "auto" precision would pick)
RECIPE = {"base_filters": 16, "precision": "float32"}


def model_facts(config, task: str, factor: int) -> dict:
    """The generator a ``config`` trains for ``task``, as a card records it: its settings and parameter count."""
    from cgan_ct.model import networks
    from cgan_ct.model.training import model_for_task

    built = model_for_task(config, task, factor)
    return {
        "model": {k: v for k, v in dataclasses.asdict(built).items() if k != "epochs"},
        "parameters": networks.build_generator(built).count_params(),
    }


def run_facts(card: dict | None) -> dict:
    """Where and when a model was trained, and the card version it becomes (one above ``card``'s)."""
    from cgan_ct import runtime

    status = runtime.status()
    return {
        "cpu": f"{status['cpu']}, {os.cpu_count()} cores",
        "onednn": status["onednn"],
        "date": time.strftime("%Y-%m-%d"),
        "version": (card or {}).get("version", 0) + 1,
    }
