"""``cascade.json``: the description of a synthesis cascade folder.

Written by ``cascade_training`` when the last model of a cascade is saved, read
by ``synthesis.Cascade`` to chain the models. Kept apart from both so that
synthesis (serving) never imports the training code.
"""

from __future__ import annotations

import dataclasses
import pathlib

from cgan_ct.constants import CASCADE_FILE
from cgan_ct.errors import InputError
from cgan_ct.io.json_files import read_json_object, versioned_fields, write_json_atomic
from cgan_ct.model import pretrained

CASCADE_FORMAT_VERSION = 1
_WHAT = "cascade description"


@dataclasses.dataclass(frozen=True)
class CascadeSpec:
    """A cascade: ``levels`` x2 stages above a coarse generator, ``size`` x ``size`` in-plane at full resolution.

    Attributes:
      levels: depixelation stages (the coarse level is every 2**levels-th voxel).
      size: in-plane voxels of the full-resolution volume.
      spacing_mm: (z, y, x) spacing of the full-resolution volume (the training volumes' median).
      default_slices: slices of a volume when none are asked for (the training volumes' median).
      coarse: folder (inside the cascade folder) of the coarse generator.
      stages: folders of the stages, coarsest first.
      cascade_id: a pseudonymous id (from the dataset fingerprint and the seed), carried by synthetic volumes.
      training: counts and settings of the training only (no ids, no paths).
      output_calibration: a monotone HU -> HU map the full-resolution volume is served through
        (``cgan_ct.synthesis.calibration.Calibration.to_json``), or None (cascades before 2026-12-06).
      output_grain: the texture the calibrated volume is given (mottle out, real grain in:
        ``cgan_ct.synthesis.grain.Grain.to_json``), or None (cascades before 2026-12-07).
      placements: the training volumes' in-plane spacing and body offset
        (``cgan_ct.synthesis.placement.Placement.to_json``, numbers only, sorted), which a volume's grid is drawn
        from; None (a cascade trained without ``--placement``): every volume on the one grid of ``spacing_mm``.
    """

    levels: int
    size: int
    spacing_mm: tuple[float, ...]
    default_slices: int
    coarse: str
    stages: tuple[str, ...]
    cascade_id: str = "cascade"
    training: dict = dataclasses.field(default_factory=dict)
    output_calibration: dict | None = None
    output_grain: dict | None = None
    placements: list | None = None
    format_version: int = CASCADE_FORMAT_VERSION

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, path=None) -> CascadeSpec:
        fields = versioned_fields(cls, data, path, _WHAT, CASCADE_FORMAT_VERSION)
        try:
            fields["spacing_mm"] = tuple(float(s) for s in fields["spacing_mm"])
            fields["stages"] = tuple(str(s) for s in fields["stages"])
            fields["levels"], fields["size"] = int(fields["levels"]), int(fields["size"])
            fields["default_slices"] = int(fields["default_slices"])
        except (TypeError, ValueError) as exc:
            raise InputError(path, f"{_WHAT} is malformed ({exc})") from None
        return cls(**fields)

    @classmethod
    def load(cls, folder) -> CascadeSpec:
        """The spec of a cascade folder, or of the shipped one (``pretrained:synthesis``)."""
        folder = cascade_folder(folder)
        path = folder / CASCADE_FILE
        if not path.exists():
            raise InputError(
                pathlib.Path(folder),
                f"not a synthesis cascade (no {CASCADE_FILE}); train one with cgan-ct-train-cascade",
            )
        return cls.from_json(read_json_object(path, _WHAT), path)

    def save(self, folder) -> pathlib.Path:
        return write_json_atomic(pathlib.Path(folder) / CASCADE_FILE, self.to_json())


def is_cascade(folder) -> bool:
    """Whether ``folder`` holds a cascade (its cascade.json)."""
    return (pathlib.Path(folder) / CASCADE_FILE).is_file()


def cascade_folder(spec) -> pathlib.Path:
    """The folder of a cascade: ``pretrained:NAME`` -> the shipped cascade's, anything else as a path."""
    return pretrained.resolve(spec, is_cascade)
