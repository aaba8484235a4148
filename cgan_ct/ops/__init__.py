"""Pure operations on CT values that every stage uses: the intensity mapping (HU <-> [-1, 1]), the
tasks' corruptions (Poisson noise, pixelation), tiling volumes into blocks and stitching predictions back,
the body and lung masks, and the scale pyramid of the synthesis cascade.

Arrays in, arrays out (numpy arrays or TensorFlow tensors, HU or normalized values as each function
says); no files, no models, no Volume objects. May import nothing of the project but the top-level
``config``, ``constants`` and ``errors``.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ()

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "DEFAULT_FACTOR": "corruption",
    "DEFAULT_PEAK": "corruption",
    "IntensityMapping": "intensity",
    "TASKS": "corruption",
    "autoencode": "corruption",
    "blend_window": "blocks",
    "block_origins": "blocks",
    "body_mask": "body_mask",
    "depixelate": "corruption",
    "fit_equalization": "intensity",
    "hu_histogram": "intensity",
    "level_length": "pyramid",
    "level_shape": "pyramid",
    "linear_mapping": "intensity",
    "lung_mask": "lung",
    "make_condition": "corruption",
    "poisson_noise": "corruption",
    "predict_sums": "blocks",
    "predict_volume": "blocks",
    "sliding_origins": "blocks",
    "downsample": "pyramid",
    "mean_pool": "pyramid",
    "subsample": "pyramid",
    "tile_edges": "blocks",
    "tile_origins": "blocks",
    "tile_stride": "blocks",
    "upsample_nearest": "pyramid",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
