"""Anatomy measures (cgan_ct.realism.anatomy) on a real chest: what they see, and that they see it go missing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgan_ct import read_volume
from cgan_ct.realism.anatomy import MEASURES, anatomy_checks, anatomy_measures

SERIES = "lidc-idri-0001"  # GE, 2.5 mm, 80 central slices: trachea, carina, heart and ribs in view


@pytest.fixture(scope="module")
def chest(shared_ct):
    """The real chest at half in-plane resolution (1.4 mm pixels, 4x faster): (HU, spacing)."""
    volume = read_volume(shared_ct / SERIES)
    spacing = (volume.spacing_mm[0], volume.spacing_mm[1] * 2, volume.spacing_mm[2] * 2)
    return volume.hu[:, ::2, ::2].copy(), spacing


@pytest.fixture(scope="module")
def measures(chest):
    return anatomy_measures(*chest)


def test_a_real_chest_has_lungs_ribs_an_airway_and_the_heart_on_the_left(measures):
    assert set(measures) == set(MEASURES) and all(v is not None for v in measures.values()), measures
    assert 2000 < measures["lung_volume_ml"] < 6000 and -900 < measures["lung_hu"] < -750
    assert all(8 <= measures[f"rib_count_{band}"] <= 40 for band in ("upper", "middle", "lower")), measures
    assert measures["airway_ml"] > 3 and measures["airway_length_mm"] > 40 and measures["airway_branches"] >= 2
    assert measures["heart_left_mm"] > 5  # measured at full resolution: +14.0 mm
    assert all(0.01 < measures[f"bone_fraction_{band}"] < 0.15 for band in ("upper", "middle", "lower"))


def test_mirrored_the_heart_changes_side_and_the_checks_see_it(chest, measures):
    hu, spacing = chest
    mirrored = anatomy_measures(hu[:, :, ::-1], spacing)
    assert mirrored["heart_left_mm"] == pytest.approx(-measures["heart_left_mm"], abs=1.5)  # a pixel's shift
    real = [measures, {**measures, "heart_left_mm": measures["heart_left_mm"] + 10}]
    assert all(c.passed for c in anatomy_checks(measures, real))
    failed = {c.measure for c in anatomy_checks(mirrored, real) if not c.passed}
    assert "heart_left_mm" in failed


def test_without_bone_or_airway_air_the_checks_fail(chest, measures):
    hu, spacing = chest
    boneless = np.where(hu >= 300, np.int16(40), hu)
    no_bone = anatomy_measures(boneless, spacing)
    assert no_bone["rib_count_middle"] == 0 and no_bone["bone_fraction_middle"] == 0
    failed = {c.measure for c in anatomy_checks(no_bone, [measures]) if not c.passed}
    assert {"rib_count_middle", "bone_fraction_middle"} <= failed
    airless = np.where(hu < -950, np.int16(-800), hu)  # airways filled as lung parenchyma is
    no_air = anatomy_measures(airless, spacing)
    assert no_air["airway_ml"] < 1.0
    assert "airway_ml" in {c.measure for c in anatomy_checks(no_air, [measures]) if not c.passed}


def test_the_report_section_passes_a_real_chest_and_names_what_a_boneless_one_lacks(chest):
    """anatomy_report (the synthesis report's section): each synthetic volume against the real range; a failure
    is named with its value and the allowed range; a volume with no body fails its checks instead of crashing."""
    from types import SimpleNamespace

    from cgan_ct.realism.anatomy import anatomy_report

    hu, spacing = chest
    real = SimpleNamespace(hu=hu, spacing_mm=spacing)
    boneless = SimpleNamespace(hu=np.where(hu >= 300, np.int16(40), hu), spacing_mm=spacing)
    empty = SimpleNamespace(hu=np.full((8, 32, 32), -1024, np.int16), spacing_mm=spacing)
    report = anatomy_report([real, boneless, empty], [real, real])
    passed, text = report.goal()
    assert not passed and text.startswith("1 of 3 synthetic volumes pass every check"), text
    failures = report.failures()
    assert any(f.startswith("synthetic 1: rib_count_middle 0.0 (allowed ") for f in failures), failures
    assert not any(f.startswith("synthetic 0:") for f in failures)
    assert sum(f.startswith("synthetic 2:") for f in failures) == len(MEASURES)
    table = report.markdown().splitlines()
    assert len(table) == 2 + len(MEASURES) and "**out**" in table[2 + MEASURES.index("rib_count_middle")]
    assert json.loads(report.to_json())["checks"][1][0]["measure"] == MEASURES[0]
