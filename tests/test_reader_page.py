"""The reader study's page: its markup does not depend on which side is real, and it fetches nothing."""

from __future__ import annotations

import json
import re

from cgan_ct.study import reader_study as rs
from cgan_ct.study.reader_page import page_html
from tests.reader_helpers import build


def test_page_markup_does_not_depend_on_the_truth(reader_volumes, tmp_path):
    study = build(reader_volumes, tmp_path / "out")
    key = json.loads(study.key.read_text())
    flipped = [{**t, "real_side": "left" if t["real_side"] == "right" else "right"} for t in key["trials"]]
    assert page_html(key["study_id"], flipped, rs.WINDOWS, 96) == study.page.read_text()
    data = json.loads(re.search(r'<script id="study-data"[^>]*>(.*?)</script>', study.page.read_text(), re.S)[1])
    assert all(set(t) == {"trial", "window", "left", "right"} for t in data["trials"])
    assert "real_side" not in study.page.read_text()
    assert not re.search(r"https?:|//[a-z]|<link|@import|url\(", study.page.read_text())  # nothing to fetch
