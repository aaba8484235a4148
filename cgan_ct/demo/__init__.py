"""The one-command demo: synthetic chest phantoms (a cohort with no patient in it), sized to the
machine by a measured plan, converted, trained for the three tasks, exported, evaluated against the
baselines, reported.

May import ``ops``, ``io``, ``data``, ``model`` and ``inference``. Quiet as the rest of the library:
it reports through the callbacks its caller passes.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io", "data", "model", "inference")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "DemoSettings": "run",
    "STATE": "run",
    "make_phantom": "phantom",
    "run_demo": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
