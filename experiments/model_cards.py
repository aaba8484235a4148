"""Renders the shipped models' cards again: MODEL_CARD.md from card.json + scores.json, and example.jpg.

  python experiments/model_cards.py [--into cgan_ct/model/pretrained_models] [--models denoise,...]
      [--ct_dir ../shared/data/ct] [--nofigures]

The example figure runs each model on the central 32 slices of the first held-out series named in its
card.json (from --ct_dir) and draws condition | model | best baseline | original. Prints each card's
headline (mean whole-volume PSNR of input, model and best baseline) and the seconds each took.
"""

from __future__ import annotations

import pathlib
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_INTO = flags.DEFINE_string("into", str(_ROOT / "cgan_ct" / "model" / "pretrained_models"), "Model folders.")
_MODELS = flags.DEFINE_list("models", None, "Models to render (default: every folder with a card.json).")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_FIGURES = flags.DEFINE_bool("figures", True, "Draw example.jpg (needs --ct_dir); else only the Markdown.")


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.inference import model_card

    into = pathlib.Path(_INTO.value)
    names = _MODELS.value or sorted(p.parent.name for p in into.glob(f"*/{model_card.CARD_FILE}"))
    if not names:
        raise app.UsageError(f"no {model_card.CARD_FILE} under {into}")
    for name in names:
        start = time.monotonic()
        folder = into / name
        card, rows = model_card.load_card(folder)
        if _FIGURES.value:
            model_card.write_example_figure(folder, pathlib.Path(_CT.value) / card["heldout"][0])
        model_card.write_model_card(folder)
        top = model_card.headline(rows)
        print(
            f"{name}: input {top['condition']:.2f} dB, model {top['model']:.2f} dB, best classical "
            f"{top['baseline']} {top['baseline_db']:.2f} dB ({time.monotonic() - start:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
