"""Model cards and the README say what scores.json says: rendered from it, compared line for line."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from cgan_ct.inference import model_card
from cgan_ct.model import pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = pretrained.available()


def test_every_shipped_model_has_a_card_record():
    assert SHIPPED, "no shipped models found"
    for name in SHIPPED:
        folder = pretrained.PRETRAINED_DIR / name
        card, rows = model_card.load_card(folder)
        assert card["name"] == name
        assert {"version", "date", "weights_license", "limitations", "input_domain", "training"} <= set(card)
        assert rows, name


@pytest.mark.parametrize("name", SHIPPED)
def test_the_card_is_its_records_rendered(name):
    folder = pretrained.PRETRAINED_DIR / name
    card, rows = model_card.load_card(folder)
    expected = model_card.render_model_card(card, rows, (folder / model_card.EXAMPLE_FIGURE).exists())
    shipped = (folder / model_card.MODEL_CARD_FILE).read_text()
    assert shipped == expected, f"{name}: MODEL_CARD.md differs from card.json + scores.json; rerun write_model_card"


@pytest.mark.parametrize("name", SHIPPED)
def test_cards_carry_no_words_of_our_own_process(name):
    text = (pretrained.PRETRAINED_DIR / name / model_card.MODEL_CARD_FILE).read_text()
    for pattern in (r"\bissue \d", "Correction", r"\.\./shared", "Goal of"):
        assert not re.search(pattern, text), f"{name}: {pattern!r} in the model card"


def test_the_readme_table_of_shipped_models_equals_their_scores():
    readme = (ROOT / "README.md").read_text()
    for name in SHIPPED:
        card, rows = model_card.load_card(pretrained.PRETRAINED_DIR / name)
        assert model_card.readme_row(name, card, rows) in readme, f"README row of {name} is not its scores.json"


def test_headline_and_verdicts_on_a_made_up_table():
    def row(patient, method, region, psnr):
        return {"patient": patient, "method": method, "region": region, "psnr_slices_db": psnr, "ssim_slices": 0.9}

    rows = []
    for region in ("volume", "lungs"):
        rows += [
            row("pat-a", "condition", region, 30.0),
            row("pat-a", "model", region, 35.0),
            row("pat-a", "gaussian", region, 34.0),
            row("pat-a", "non_local_means", region, 35.05),
            row("pat-b", "condition", region, 31.0),
            row("pat-b", "model", region, 33.0),
            row("pat-b", "gaussian", region, 32.0),
            row("pat-b", "non_local_means", region, 34.0),
        ]
    top = model_card.headline(rows)
    assert top["baseline"] == "non_local_means"
    assert top["model"] == pytest.approx(34.0) and top["baseline_db"] == pytest.approx(34.525)
    text = model_card.standing(rows)
    assert "its input it wins on 2, ties on 0 and loses on 0 of 2" in text
    assert "(non_local_means) it wins on 0, ties on 1 and loses on 1 of 2" in text


def test_unknown_series_are_named_not_invented():
    assert model_card.source("some-hospital-series") == ("some-hospital-series", "unknown", "-")
    assert json.dumps(model_card.source("lidc-idri-0001")).count("CC BY 3.0") == 1


def test_the_evaluate_help_names_every_shipped_model():
    doc = (ROOT / "pipelines" / "evaluate.py").read_text().split('"""')[1]
    missing = [name for name in SHIPPED if f"pretrained:{name}" not in doc]
    assert not missing, f"cgan-ct-evaluate --help does not name {missing}"


@pytest.mark.parametrize("name", SHIPPED)
def test_cards_are_scored_on_the_cohorts_held_out_patients_and_never_trained_on_them(name):
    """Issue 31: the split is one file (experiments/cohort.json) that the cards read: every card is scored on its
    held-out patients, one row set per patient, and none of them is among the model's training series."""
    cohort = json.loads((ROOT / "experiments" / "cohort.json").read_text())
    card, rows = model_card.load_card(pretrained.PRETRAINED_DIR / name)
    assert sorted(card["heldout"]) == sorted(cohort["heldout"])
    assert not set(card["heldout"]) & set(card["training"]["series"])
    assert len({r["patient"] for r in rows if r["method"] == "model"}) == len(cohort["heldout"])


def test_a_card_renders_without_lung_rows_and_says_nothing_of_the_lungs():
    """A slab of a few slices has no lung mask (lowdose_eval.py's tiny run): the card renders its volume rows and
    leaves the lungs out rather than failing; a patient missing a region is left out of that region's rows."""
    card, rows = model_card.load_card(pretrained.PRETRAINED_DIR / "depixelate")
    volume_only = [r for r in rows if r["region"] == "volume"]
    text = model_card.render_model_card(card, volume_only)
    assert "| volume |" in text and "| lungs |" not in text and "In the lungs" not in text
    one_short = [r for r in rows if not (r["region"] == "lungs" and r["patient"] == rows[0]["patient"])]
    lung_rows = [line for line in model_card.results_table(one_short) if "| lungs |" in line]
    assert len(lung_rows) == len({r["patient"] for r in rows}) - 1


def test_a_cards_scale_and_scanners_are_its_recorded_facts():
    """Issue 31: the scale line and the scanners seen are rendered from card.json's facts (never typed words that
    go stale when a model is retrained); a generator larger than its preset says so."""
    card, rows = model_card.load_card(pretrained.PRETRAINED_DIR / "depixelate")
    training = card["training"]
    text = model_card.render_model_card(card, rows)
    assert f"trained on {len(training['series'])} patients ({len(training['scanners'])} scanner" in text
    assert "Seen in training (from the series' headers): " + "; ".join(training["scanners"]) in text
    assert "Tested on the held-out patients' scanners: " + "; ".join(card["heldout_scanners"]) in text
    assert sum("Seen in training" in line for line in text.splitlines()) == 1
    bigger = json.loads(json.dumps(card))
    bigger["training"]["model"]["base_filters"] = 16
    bigger["training"]["parameters"] = "1,249,809"
    text = model_card.render_model_card(bigger, rows)
    assert "The `cpu` preset at 16 first-level filters: 1,249,809 generator parameters" in text
    assert "a generator of 1.25 M parameters" in text
    bigger["training"]["model"]["base_filters"] = 8
    assert "preset at" not in model_card.render_model_card(bigger, rows)
