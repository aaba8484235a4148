"""Using a trained model on whole scans, and judging it: condition -> blocks -> prediction ->
stitched volume in HU, the quality metrics (PSNR, SSIM, MAE, over the lungs too), the classical baselines
a user already has (interpolation, Gaussian smoothing, non-local means), evaluation over held-out scans,
and the report's tables, verdicts and figures (matplotlib, loaded only when a figure is drawn).

May import ``ops``, ``io`` and the serving side of ``model`` (never its training code, never ``data``).
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io", "model")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "BASELINES": "baselines",
    "BlockModel": "inference",
    "baselines": "baselines",
    "evaluate_inputs": "evaluation",
    "infer_volume": "inference",
    "condition_volume": "inference",
    "quality": "metrics",
    "verdict": "report",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
