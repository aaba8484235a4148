"""Configurations as frozen dataclasses, with named presets.

Jobs pick a preset by name and override fields from their flags.
"""

from __future__ import annotations

import dataclasses

from cgan_ct.volume import AIR_HU

INTENSITY_KINDS = ("equalize", "linear")


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """How CT volumes become TFRecord blocks.

    Attributes:
      block_size: edge of the cubic blocks the GAN sees (voxels).
      margin: context stored on each side of a block, so the input pipeline
        can translate and rotate without inventing voxels. A record holds
        (block_size + 2 * margin)^3 voxels.
      test_fraction: fraction of patients in the test split.
      seed: seed of the patient split.
      shard_target_mb: approximate size of one TFRecord shard.
      spacing_mm: resample every volume to this (z, y, x) spacing; None keeps
        the native grid (the paper's full resolution).
      drop_outside_body: drop blocks with no voxel inside the body.
      unet_depth: down-sampling levels of the generator; block_size must
        divide by 2 ** unet_depth.
      pad_hu: value of voxels beyond the volume's edge (air).
      intensity: "equalize" (the paper's histogram equalization, fitted on
        the training split) or "linear" (a fixed window to [-1, 1]).
    """

    block_size: int = 32
    margin: int = 8
    test_fraction: float = 0.2
    seed: int = 0
    shard_target_mb: float = 150.0
    spacing_mm: tuple[float, float, float] | None = None
    drop_outside_body: bool = False
    unet_depth: int = 4
    pad_hu: int = AIR_HU
    intensity: str = "equalize"

    def __post_init__(self):
        if self.block_size <= 0 or self.block_size % (2**self.unet_depth):
            raise ValueError(
                f"block_size {self.block_size} must be a positive multiple of 2**unet_depth = "
                f"{2**self.unet_depth} (the generator's down-sampling)"
            )
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.shard_target_mb <= 0:
            raise ValueError(f"shard_target_mb must be > 0, got {self.shard_target_mb}")
        if self.intensity not in INTENSITY_KINDS:
            raise ValueError(f"intensity must be one of {INTENSITY_KINDS}, got {self.intensity!r}")
        if self.spacing_mm is not None and (len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0):
            raise ValueError(f"spacing_mm must be three positive values (z, y, x), got {self.spacing_mm}")

    @property
    def stored_size(self) -> int:
        """Edge of a stored record: the block with its margin on both sides."""
        return self.block_size + 2 * self.margin

    @property
    def record_bytes(self) -> int:
        return 2 * self.stored_size**3


CONVERSION_PRESETS = {
    "paper": ConversionConfig(),
    "cpu": ConversionConfig(),
    "smoke": ConversionConfig(block_size=16, margin=4, unet_depth=2, shard_target_mb=1.0),
}


def conversion_config(preset: str = "paper", **overrides) -> ConversionConfig:
    """The named preset with ``overrides`` applied (None values are ignored)."""
    if preset not in CONVERSION_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(CONVERSION_PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(CONVERSION_PRESETS[preset], **changes)
