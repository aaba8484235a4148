"""The written split of the shared cohort (benchmarks/cohort.json) follows its own rule and the headers it names."""

from __future__ import annotations

import pydicom
import pytest

from tests.conftest import REPO, benchmark_module

cohort = benchmark_module("cohort")
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
        text = (REPO / "benchmarks" / f"{script}.py").read_text()
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
