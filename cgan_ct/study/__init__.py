"""The reader study: blinded pairs of real and generated slices for radiologists (a page that runs
in any browser, offline), its key kept apart, and scoring the readers' answers (accuracy, confidence
intervals, the binomial test against guessing).

May import ``ops`` and ``io``: it reads volumes, never models.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "build_study": "reader_study",
    "page_html": "reader_page",
    "read_answers": "reader_score",
    "read_key": "reader_score",
    "score_readers": "reader_score",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
