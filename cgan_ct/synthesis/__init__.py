"""Synthetic CT of patients who do not exist: the coarse GAN that draws whole coarse volumes from
noise (networks, training, export), the cascade of x2 depixelation stages that refines them block by block
with memory bounded by the block, training a cascade, the cascade description, and synthesis itself. Judging
what comes out (statistics, realism, memorization, the report) is the ``realism`` room's.

May import every room below it: ``ops``, ``io``, ``data``, ``model``, ``inference``. Synthesis from a
trained cascade (``synthesis``, ``coarse_export``) never imports the training code.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io", "data", "model", "inference", "realism")  # realism: MS-SSIM while training

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "Calibration": "calibration",
    "Cascade": "synthesis",
    "CascadeSettings": "cascade_training",
    "CascadeSpec": "cascade_spec",
    "CoarseGAN": "coarse_training",
    "CoarseModel": "coarse_export",
    "CoarseModule": "coarse_export",
    "Degradation": "degradation",
    "Grain": "grain",
    "SYNTHETIC_SOURCE": "synthesis",
    "augment_for_discriminator": "coarse_training",
    "build_coarse_discriminator": "coarse_networks",
    "build_coarse_generator": "coarse_networks",
    "cascade_stream": "cascade",
    "crop_batches": "coarse_training",
    "draw_noise": "coarse_networks",
    "fit_calibration": "calibration",
    "fit_degradation": "degradation",
    "fit_grain": "grain",
    "fit_plane": "cascade_training",
    "positions": "coarse_networks",
    "refine_stream": "cascade",
    "save_coarse_model": "coarse_export",
    "synthetic_volume": "synthesis",
    "train_cascade": "cascade_training",
    "train_coarse": "coarse_training",
    "write_synthetic_volumes": "writing",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
