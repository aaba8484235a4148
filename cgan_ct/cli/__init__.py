"""What only the jobs (``pipelines/``, ``tfrecords_tools/``) use: the one way a job runs
(``job.run``: flags, ``--help``, errors as one line and exit status 2), progress bars on the console, the
Keras callback that draws one, and the shared ``--format`` handling.

It sits on the jobs' side of the house, above every room, and may import any of them; no room imports
it (the library never prints on its own).
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io", "data", "model", "inference", "synthesis", "study", "demo")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "FitProgress": "fit_progress",
    "ProgressBar": "progress",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
