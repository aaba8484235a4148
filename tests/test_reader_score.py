"""Scoring a reader study: the exact binomial interval and p-value, the table, and answers files that are
wrong in every way a reader's browser or spreadsheet can make them."""

from __future__ import annotations

import json
import re

import pytest
from scipy import stats

from cgan_ct import InputError
from cgan_ct.study.reader_score import (
    binomial_p_half,
    clopper_pearson,
    markdown_table,
    read_answers,
    read_key,
    score_readers,
)
from tests.reader_helpers import answers_file, key_file


@pytest.mark.parametrize(
    ("k", "n"), [(0, 1), (1, 1), (0, 20), (10, 20), (15, 20), (20, 20), (7, 40), (33, 60), (512, 1000)]
)
def test_interval_and_p_value_match_scipy(k, n):
    reference = stats.binomtest(k, n, 0.5)
    ci = reference.proportion_ci(0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert binomial_p_half(k, n) == pytest.approx(reference.pvalue, rel=1e-9)


def test_interval_and_p_value_golden():
    # 15 of 20: p = 2 * (1 + 20 + 190 + 1140 + 4845 + 15504) / 2**20 = 43400 / 1048576.
    assert binomial_p_half(15, 20) == 43400 / 1048576
    assert clopper_pearson(15, 20) == pytest.approx((0.508954, 0.913428), abs=1e-6)
    assert binomial_p_half(10, 20) == 1.0
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_score_table_golden(tmp_path):
    key_path, trials = key_file(tmp_path, [("left", "lung"), ("right", "mediastinum")] * 10)
    r1 = answers_file(tmp_path, "R1", trials, lambda t: t["trial"] <= 15)  # 15 of 20: 8 lung, 7 mediastinum
    r2 = answers_file(tmp_path, "R2", trials, lambda t: t["window"] == "lung", fmt="csv")
    readers = [read_answers(r1), read_answers(r2)]
    assert readers[1].answers[0].note == 'a, "b"' and readers[1].answers[0].confidence == 3
    table = markdown_table(score_readers(read_key(key_path), readers))
    assert table.splitlines()[2:] == [
        "| R1 | lung | 10 | 8 | 80.0% | 44.4% to 97.5% | 0.109 |",
        "| R1 | mediastinum | 10 | 7 | 70.0% | 34.8% to 93.3% | 0.344 |",
        "| R1 | all | 20 | 15 | 75.0% | 50.9% to 91.3% | 0.0414 |",
        "| R2 | lung | 10 | 10 | 100.0% | 69.2% to 100.0% | 0.00195 |",
        "| R2 | mediastinum | 10 | 0 | 0.0% | 0.0% to 30.8% | 0.00195 |",
        "| R2 | all | 20 | 10 | 50.0% | 27.2% to 72.8% | 1 |",
        "| pooled | lung | 20 | 18 | 90.0% | 68.3% to 98.8% | 0.000402 |",
        "| pooled | mediastinum | 20 | 7 | 35.0% | 15.4% to 59.2% | 0.263 |",
        "| pooled | all | 40 | 25 | 62.5% | 45.8% to 77.3% | 0.154 |",
    ]


def test_unanswered_trials_are_left_out(tmp_path):
    key_path, trials = key_file(tmp_path, [("left", "lung")] * 4)
    path = answers_file(tmp_path, "R1", trials, lambda t: True)
    data = json.loads(path.read_text())
    data["answers"][0]["choice"] = None
    path.write_text(json.dumps(data))
    (score,) = [s for s in score_readers(read_key(key_path), [read_answers(path)]) if s.reader == "R1"]
    assert (score.answered, score.correct) == (3, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study_id": "study-y"}, "answers to study study-y, but the key is of study-x"),
        ({"format": "other"}, "not a reader study answers file"),
        (
            {"answers": [{"trial": 9, "choice": "left", "left_image": "a", "right_image": "b"}]},
            "trial 9 is not in the key",
        ),
        ({"answers": [{"trial": 1, "choice": "middle", "left_image": "a", "right_image": "b"}]}, "choice must be left"),
        ({"answers": [{"trial": 1, "choice": "left", "left_image": "a", "right_image": "b"}]}, "other images than"),
        ({"answers": [{"trial": 1, "choice": "left"}]}, "malformed answers: 'left_image'"),
    ],
)
def test_bad_answers_name_the_file(tmp_path, change, message):
    key_path, trials = key_file(tmp_path, [("left", "lung")] * 2)
    path = answers_file(tmp_path, "R1", trials, lambda t: True, **change)
    with pytest.raises(InputError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        score_readers(read_key(key_path), [read_answers(path)])


def test_duplicate_readers_trials_and_badfiles(tmp_path):
    key_path, trials = key_file(tmp_path, [("left", "lung")] * 2)
    key = read_key(key_path)
    a = answers_file(tmp_path, "R1", trials, lambda t: True)
    b = tmp_path / "copy.json"
    b.write_bytes(a.read_bytes())
    with pytest.raises(InputError, match=re.escape(str(b)) + ": reader 'R1' appears in more than one"):
        score_readers(key, [read_answers(a), read_answers(b)])
    twice = answers_file(tmp_path, "R2", trials + trials[:1], lambda t: True)
    with pytest.raises(InputError, match="answered more than once"):
        score_readers(key, [read_answers(twice)])
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(InputError, match="junk.json: not valid JSON"):
        read_answers(tmp_path / "junk.json")
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="junk.csv: not a reader study answers CSV"):
        read_answers(tmp_path / "junk.csv")
    with pytest.raises(InputError, match="no such file"):
        read_answers(tmp_path / "none.csv")
    with pytest.raises(InputError, match="not a reader study key"):
        read_key(a)
