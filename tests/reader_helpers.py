"""Helpers of the reader-study tests (test_reader_study, test_reader_page, test_reader_score,
test_reader_study_cli): a study built with fixed seeds, a folder's files, a key and answers files."""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage

from cgan_ct import write_nifti
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.study import reader_study as rs
from cgan_ct.study.reader_page import ANSWERS_FORMAT


def write_volume_pair(folder):
    """A phantom as 'real' and a blurred copy as 'generated', NIfTI, 16 slices of 96 x 96: their paths."""
    real = make_phantom(1, 16, 96)
    blurred = ndimage.gaussian_filter(real.hu.astype(np.float32), (0, 1.5, 1.5))
    write_nifti(real, folder / "real.nii.gz")
    write_nifti(real.replace(hu=np.rint(blurred).astype(np.int16)), folder / "generated.nii.gz")
    return folder / "real.nii.gz", folder / "generated.nii.gz"


def build(volumes, out, **kwargs):
    kwargs = {"pairs": 6, "window": "both", "seed": 7, "size_px": 96, "blinding_seed": 1, **kwargs}
    return rs.build_study(*volumes, out, **kwargs)


def folder_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def key_file(tmp_path, sides_windows):
    trials = [
        {
            "trial": i + 1,
            "window": w,
            "real_side": s,
            "left_image": f"{i:016x}.png",
            "right_image": f"{i + 99:016x}.png",
        }
        for i, (s, w) in enumerate(sides_windows)
    ]
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"format": rs.KEY_FORMAT, "study_id": "study-x", "trials": trials}))
    return path, trials


def answers_file(tmp_path, reader, trials, correct, fmt="json", study_id="study-x", **overrides):
    rows = []
    for t in trials:
        side = t["real_side"] if correct(t) else ("left" if t["real_side"] == "right" else "right")
        rows.append(
            {"trial": t["trial"], "window": t["window"], "left_image": t["left_image"],
             "right_image": t["right_image"], "choice": side, "confidence": 3, "note": 'a, "b"', "seconds": 1.5}
        )  # fmt: skip
    path = tmp_path / f"{reader}.{fmt}"
    if fmt == "json":
        data = {"format": ANSWERS_FORMAT, "version": 1, "study_id": study_id, "reader": reader, "answers": rows}
        path.write_text(json.dumps({**data, **overrides}))
    else:
        header = "study_id,reader,trial,window,left_image,right_image,choice,confidence,note"
        lines = [header] + [
            f"{study_id},{reader},{r['trial']},{r['window']},{r['left_image']},{r['right_image']},{r['choice']},"
            f'{r["confidence"]},"a, ""b"""'
            for r in rows
        ]
        path.write_text("\r\n".join(lines) + "\r\n")
    return path
