"""Values every room of the package shares, written once.

HU constants, the display windows, the Poisson protocol, the task names, and
the names of the files and SavedModel signatures that other tools rely on.
This module imports nothing; any module of the project may import it.
"""

from __future__ import annotations

import dataclasses

PACKAGE = "cgan_ct"

# --- Hounsfield units -------------------------------------------------------------------------
AIR_HU = -1024  # air, and what padding and out-of-field voxels become
CLIP_HU = (-1024, 3071)  # the CT numbers a 12-bit scanner stores; intensity and metrics clip to it
DATA_RANGE_HU = 4096.0  # CLIP_HU's width: the data range of PSNR and SSIM
# A training block is "air" when fewer than AIR_BLOCK_FRACTION of its voxels are above CONTENT_HU
# (tissue, vessels, bone, the table). Measured on three shared chest series: 26-38 % of blocks, of which
# 93-98 % have no body voxel at all; the 1-2 % of body blocks caught are mostly lung at the body's edge.
CONTENT_HU = -500  # also the body mask's threshold (cgan_ct.ops.body_mask): body and table above it
# Tissue classes by CT number (inclusive): the synthesis statistics and anatomy checks use these
FAT_HU = (-190, -30)
SOFT_TISSUE_HU = (-29, 150)
BONE_HU = 300  # and above
AIR_BLOCK_FRACTION = 0.01
DEFAULT_AIR_KEEP = 0.1  # share of air blocks the training pipeline keeps (1.0: all, as the paper)


@dataclasses.dataclass(frozen=True)
class Window:
    """A display window in HU: ``level_hu`` is its centre, ``width_hu`` its extent."""

    name: str
    label: str
    width_hu: float
    level_hu: float

    @property
    def low_hu(self) -> float:
        return self.level_hu - self.width_hu / 2

    @property
    def high_hu(self) -> float:
        return self.level_hu + self.width_hu / 2

    @property
    def range_hu(self) -> tuple[float, float]:
        return (self.low_hu, self.high_hu)


LUNG_WINDOW = Window("lung", "Lung window", 1500.0, -600.0)  # [-1350, 150] HU
MEDIASTINAL_WINDOW = Window("mediastinum", "Mediastinal window", 400.0, 40.0)  # [-160, 240] HU

# --- the denoise task's Poisson protocol (Mangalagiri et al.) ---------------------------------
# x01 = clip((HU + POISSON_HU_OFFSET) / POISSON_HU_RANGE, 0, 1); Y = Poisson(peak * x01) / peak.
POISSON_HU_OFFSET = 1024.0
POISSON_HU_RANGE = 4096.0
DEFAULT_PEAK = 512.0  # counts at x01 = 1: lower is noisier
DEFAULT_FACTOR = 2  # the depixelate task's nearest-neighbour factor
# how a coarser level is made (cgan_ct.ops.pyramid): every factor-th voxel, or each factor-voxel cube's mean
PYRAMIDS = ("subsample", "mean")
ELASTIC_SAMPLINGS = ("trilinear", "noise_preserving")  # how elastically deformed blocks are read (data.augment)

# --- tasks ------------------------------------------------------------------------------------
AUTOENCODE = "autoencode"
DENOISE = "denoise"
DEPIXELATE = "depixelate"
LOWDOSE = "lowdose"  # the condition is stored with each block (simulated low dose, or a real pair)
DERIVED_TASKS = (AUTOENCODE, DENOISE, DEPIXELATE)  # conditions computed from the block itself
TASKS = DERIVED_TASKS + (LOWDOSE,)
# How inference gets a whole scan's condition: simulated from the scan (the task's noise, pixelation), or
# the scan itself as it is (e.g. a real low-dose scan for a denoising model).
CONDITION_MODES = ("simulate", "as_is")

# --- what the jobs write a volume as (--format) -----------------------------------------------
VOLUME_FORMATS = ("nifti", "dicom")

# --- file and signature names (promises to users and other tools) ----------------------------
MANIFEST_FILE = "manifest.json"  # a converted dataset; written last
RUN_FILE = "run.json"  # a training run folder
GENERATOR_LAST = "generator_last.keras"
GENERATOR_BEST = "generator_best.keras"
MODEL_INFO_FILE = "cgan_ct_model.json"  # beside an exported block generator
COARSE_INFO_FILE = "cgan_ct_coarse.json"  # beside an exported coarse generator
CASCADE_FILE = "cascade.json"  # a synthesis cascade folder
SAVED_MODEL_FILE = "saved_model.pb"
# TF Serving replays the requests of this TFRecord of PredictionLog records when it loads a version
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

SERVING_SIGNATURE = "serving_default"  # blocks_hu -> blocks_hu, noise drawn inside
SEEDED_SIGNATURE = "generate_hu_seeded"  # blocks_hu, seed -> blocks_hu
NORMALIZED_SIGNATURE = "generate_normalized"  # condition, noise -> generated ([-1, 1])
# Blocks per request a block SavedModel accepts: 1,000 blocks of the cpu preset took 6.6 GB; 128 stay under
# 1 GB there (the paper preset's activations are ~4x larger). cgan-ct-infer / -synthesize --batch are capped too.
MAX_SERVING_BATCH = 128
COARSE_SIGNATURE = "generate"  # the coarse generator: seed, count -> volumes
