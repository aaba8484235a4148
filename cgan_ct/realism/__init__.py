"""Judging synthetic CT without human raters: volume statistics against real scans (tissue classes, noise
power, edges), tissue sanity, MS-SSIM diversity, the Fréchet Radiomics Distance, the realism table, the
memorization check at every shift with its positive control, and the synthesis report that gathers them.

Needs only scans in HU: it may import ``ops`` and ``io`` (window and HU constants come from
``cgan_ct.constants``), never the generators it judges, so a report can judge any synthetic CT, ours or not.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "coarse_memorization_report": "memorization_report",
    "memorization_report": "memorization_report",
    "positive_control": "memorization_report",
    "realism_table": "realism_table",
    "synthesis_report": "synthesis_report",
    "volume_statistics": "synthesis_stats",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
