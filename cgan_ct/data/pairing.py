"""Paired conversion: full-dose volumes matched with the same patients' low-dose (condition) volumes.

A user with real pairs (a full-dose and a low-dose series of each patient, as the public low-dose
challenge data sets are organised) converts them with ``convert(inputs, ..., condition_inputs=...)``
(``cgan-ct-convert --input FULL --condition_input LOW``). Volumes are paired by patient (the
pseudonymous key from PatientID), then, where a patient has several, by slice geometry; volume files
without patient identity pair by file name. Each pair's grids are checked voxel for voxel: the same
in-plane grid, orientation and spacing, and slice positions; the full-dose volume keeps the slices
both series hold (a warning says so when that is fewer than all).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from cgan_ct.errors import InputError
from cgan_ct.io.sources import SkippedInput, VolumeSource, skipped_from_error
from cgan_ct.io.volume import Volume

_SPACING_TOLERANCE_MM = 1e-3
_DIRECTION_TOLERANCE = 1e-4
_POSITION_TOLERANCE = 0.1  # of a voxel


def _name(source: VolumeSource) -> str | None:
    return source.file.name if source.file is not None else None


def pair_sources(
    sources: list[VolumeSource], condition_sources: list[VolumeSource], salt: str | None
) -> tuple[list[VolumeSource], list[SkippedInput]]:
    """Each full-dose source with its condition source attached (``paired``), and the ones left unpaired.

    A patient with one full-dose and one condition volume pairs them; with several, each full-dose
    volume takes the condition volume of the same slice count and in-plane size when exactly one
    matches. Unmatched full-dose volumes are skipped with the reason.
    """
    by_patient = collections.defaultdict(list)
    by_name = collections.defaultdict(list)
    for c in condition_sources:
        by_patient[c.patient_key].append(c)
        if _name(c):
            by_name[_name(c)].append(c)
    paired, skipped = [], []
    for source in sources:
        candidates = by_patient.get(source.patient_key) or by_name.get(_name(source) or "", [])
        if len(candidates) > 1:
            same_size = [c for c in candidates if c.estimated_voxels == source.estimated_voxels]
            candidates = same_size if len(same_size) == 1 else candidates
        if len(candidates) != 1:
            why = "no" if not candidates else f"{len(candidates)} candidate"
            problem = f"{why} condition volume(s) of the same patient among the condition inputs: cannot pair it"
            skipped.append(skipped_from_error(InputError(source.location, problem), salt, source.volume_id))
            continue
        paired.append(dataclasses.replace(source, paired=candidates[0]))
    return paired, skipped


def _slice_positions(volume: Volume) -> np.ndarray:
    """Position (mm) of each slice along the slice axis."""
    normal = np.asarray(volume.direction)[:, 0]
    start = float(np.dot(np.asarray(volume.origin_mm), normal))
    return start + np.arange(volume.shape[0]) * volume.spacing_mm[0]


def align_pair(full: Volume, condition: Volume) -> tuple[Volume, np.ndarray]:
    """The full-dose volume cropped to the slices both hold, and the condition's HU on its grid.

    Raises:
      InputError naming the full-dose volume and what does not match.
    """
    problems = []
    if full.shape[1:] != condition.shape[1:]:
        problems.append(
            f"slices of {full.shape[1]} x {full.shape[2]} against {condition.shape[1]} x {condition.shape[2]}"
        )
    if np.max(np.abs(np.subtract(full.spacing_mm[1:], condition.spacing_mm[1:]))) > _SPACING_TOLERANCE_MM:
        problems.append(f"pixel spacing {full.spacing_mm[1:]} mm against {condition.spacing_mm[1:]} mm")
    if abs(full.spacing_mm[0] - condition.spacing_mm[0]) > _SPACING_TOLERANCE_MM:
        problems.append(f"slice spacing {full.spacing_mm[0]} mm against {condition.spacing_mm[0]} mm")
    if np.max(np.abs(np.asarray(full.direction) - np.asarray(condition.direction))) > _DIRECTION_TOLERANCE:
        problems.append("different orientations")
    if not problems:
        in_plane = np.asarray(full.direction)[:, 1:]
        shift = (
            (np.asarray(condition.origin_mm) - np.asarray(full.origin_mm)) @ in_plane / np.asarray(full.spacing_mm[1:])
        )
        if np.max(np.abs(shift)) > _POSITION_TOLERANCE:
            problems.append(f"in-plane origins {np.round(shift, 2).tolist()} voxels apart")
    if problems:
        raise InputError(full.volume_id, "does not match its condition volume: " + "; ".join(problems))
    offset = (_slice_positions(condition)[0] - _slice_positions(full)[0]) / full.spacing_mm[0]
    whole = round(offset)
    if abs(offset - whole) > _POSITION_TOLERANCE:
        raise InputError(full.volume_id, f"its condition volume's slices lie {offset:.2f} slices off its own")
    first, last = max(0, whole), min(full.shape[0], whole + condition.shape[0])
    if last - first < 1:
        raise InputError(full.volume_id, "has no slice position in common with its condition volume")
    condition_hu = condition.hu[first - whole : last - whole]
    if (first, last) == (0, full.shape[0]):
        return full, condition_hu
    kept = f"kept slices {first}..{last - 1} of {full.shape[0]}: those its condition volume also holds"
    cropped = full.replace(
        hu=np.ascontiguousarray(full.hu[first:last]),
        origin_mm=tuple(full.index_to_lps([first, 0, 0]).tolist()),
        warnings=full.warnings + (kept,),
    )
    return cropped, condition_hu
