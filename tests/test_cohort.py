"""The written split of the shared cohort (experiments/cohort.json) follows its own rule and the headers it names."""

from __future__ import annotations

import pydicom
import pytest

from tests.conftest import REPO, benchmark_module

cohort = benchmark_module("cohort")
heldout = benchmark_module("heldout")
COHORT = cohort.load()
MANUFACTURER_WORDS = {"Philips": "philips", "Siemens": "siemens", "GE": "ge medical"}


def test_held_out_set_is_the_rules_and_covers_two_scanners_and_two_thicknesses():
    heldout, train = COHORT["heldout"], COHORT["train"]
    assert cohort.held_out_by_rule(COHORT) == sorted(heldout)
    assert not set(heldout) & set(train) and not set(heldout) & set(COHORT["trained_before"])
    assert sorted(heldout + train) == sorted(COHORT["series"])
    assert len({COHORT["series"][s]["manufacturer"] for s in heldout}) >= 2
    assert len({COHORT["series"][s]["slice_mm"] for s in heldout}) >= 2


def test_the_training_scripts_default_to_the_split():
    for script in ("train_pretrained", "recipe_ab", "lowdose_eval"):
        text = (REPO / "experiments" / f"{script}.py").read_text()
        assert "cohort.train_series()" in text and "cohort.heldout_series()" in text, script


def test_recorded_manufacturer_and_thickness_match_the_headers(shared_ct):
    for name, info in COHORT["series"].items():
        folder = shared_ct / name
        first = min(p for p in folder.iterdir() if p.suffix == ".dcm")
        header = pydicom.dcmread(first, stop_before_pixels=True)
        assert float(header.SliceThickness) == pytest.approx(info["slice_mm"]), name
        maker = str(header.get("Manufacturer", "")).lower()
        if maker:  # lungfcp-01-0001 has none: its manufacturer is the collection's (shared README)
            assert MANUFACTURER_WORDS[info["manufacturer"]] in maker, (name, maker)


def _row(patient, method, psnr, ssim, region="volume"):
    return {
        "patient": patient,
        "series": f"s-{patient}",
        "method": method,
        "region": region,
        "psnr_slices_db": psnr,
        "ssim_slices": ssim,
    }


def test_goal_lines_take_the_best_of_the_named_baselines_and_say_met_or_missed():
    rows = [
        _row("a", "model", 44.0, 0.98),
        _row("a", "non_local_means", 42.5, 0.97),
        _row("a", "bm3d", 42.9, 0.97),
        _row("a", "condition", 36.0, 0.90),
        _row("a", "gaussian", 43.5, 0.99),  # not a goal baseline
        _row("b", "model", 41.0, 0.95),
        _row("b", "non_local_means", 40.5, 0.96),
        _row("c", "model", 45.0, 0.90),
        _row("c", "bm3d", 43.0, 0.95),
        _row("d", "model", 40.0, 0.9),  # no goal baseline scored: no line
    ]
    lines = heldout.goal_lines(rows, heldout.NOISE_GOAL_BASELINES)
    assert len(lines) == 3
    assert lines[0].startswith("a: model 44.00 dB / SSIM 0.9800, bm3d 42.90") and lines[0].endswith("met")
    assert "condition 36.00 dB" in lines[0]
    assert lines[1].endswith("missed by 0.50 dB") and "non_local_means 40.50" in lines[1]
    assert lines[2].endswith("missed on SSIM")
    by_series = heldout.goal_lines(rows, ("bm3d",), column="series")
    assert [x.split(":")[0] for x in by_series] == ["s-a", "s-c"]


def test_the_table_has_a_column_per_series_and_the_model_first():
    rows = [
        _row("a", "bm3d", 42.9, 0.97),
        _row("a", "model", 44.0, 0.98),
        _row("b", "model", 41.0, 0.95),
        _row("a", "model", 39.0, 0.93, region="lungs"),
    ]
    lines = heldout.table(rows).splitlines()
    assert lines[0] == "| region | method | a PSNR / SSIM | b PSNR / SSIM |"
    assert lines[2] == "| volume | model | 44.00 / 0.9800 | 41.00 / 0.9500 |"
    assert lines[3] == "| volume | bm3d | 42.90 / 0.9700 | - |"
    assert lines[4] == "| lungs | model | 39.00 / 0.9300 | - |"


def test_baseline_rows_are_reused_only_where_the_conditions_are_the_same():
    """train_pretrained.py keeps BM3D's rows from the previous scoring (it does not depend on the model) only
    where that scoring saw the same conditions; anything else is an error, never a stale row in a card."""
    before = [_row("a", "condition", 36.0, 0.90), _row("a", "bm3d", 42.9, 0.97), _row("a", "model", 40.0, 0.95)]
    now = [_row("a", "condition", 36.0, 0.90), _row("a", "model", 41.0, 0.96)]
    assert heldout.reused_rows(now, before, ("bm3d",)) == [before[1]]
    with pytest.raises(ValueError, match="the condition scored 36.500000 dB now and 36.000000 before"):
        heldout.reused_rows([_row("a", "condition", 36.5, 0.90)], before, ("bm3d",))
    with pytest.raises(ValueError, match="cover"):
        heldout.reused_rows(now + [_row("b", "condition", 30.0, 0.8)], before, ("bm3d",))
    with pytest.raises(ValueError, match="lack"):
        heldout.reused_rows(now, before[:1], ("bm3d",))


def test_the_scanners_seen_come_from_the_headers(shared_ct):
    """A card's input domain names what was seen: one line per scanner, kernel and thickness, pixel sizes ranged."""
    paths = [shared_ct / "covid-ct-md-P001", shared_ct / "covid-ct-md-cap001", shared_ct / "lungx-ct004"]
    assert heldout.describe_scanners(paths) == [
        "SIEMENS SOMATOM Scope (kernel D40s, 2 mm slices, 0.59-0.75 mm pixels)",
        "Philips Brilliance 64 (kernel D, 1 mm slices, 0.84 mm pixels)",
    ]


def test_the_release_scripts_record_the_shipped_recipe_and_a_new_version():
    """train_pretrained.py and lowdose_eval.py train experiments/release.py's RECIPE and record what a card says of
    it: the generator as built for the task, its parameter count, the machine, and the card version one up."""
    from cgan_ct.config import model_config

    release = benchmark_module("release")
    config = model_config("cpu", epochs=1, **release.RECIPE)
    facts = release.model_facts(config, "denoise", 2)
    assert facts["parameters"] == 1_249_377 and facts["model"]["base_filters"] == 16
    assert facts["model"]["residual_base"] == "condition" and "epochs" not in facts["model"]
    assert release.model_facts(config, "depixelate", 2)["model"]["residual_base"] == "cubic"
    run = release.run_facts({"version": 2})
    assert run["version"] == 3 and release.run_facts(None)["version"] == 1
    assert run["cpu"].endswith(" cores") and len(run["date"]) == 10
