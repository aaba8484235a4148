"""Datasets of blocks: the TFRecord schema (the only place a feature name is written), framing and
checksums, a volume's records, the sharded writer, the conversion (local processes or Apache Beam) and
its manifest, checking a converted dataset, and the tf.data input pipeline with its augmentation.

Writes and reads what ``cgan-ct-convert`` makes; feeds ``model``. May import ``ops`` and ``io``.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "ConversionReport": "conversion",
    "Manifest": "manifest",
    "PipelineOptions": "input_pipeline",
    "SPLITS": "manifest",
    "convert": "conversion",
    "convert_with_beam": "beam_conversion",
    "load_intensity": "input_pipeline",
    "load_manifest": "manifest",
    "make_dataset": "input_pipeline",
    "montage_png": "dataset_check",
    "split_patients": "conversion",
    "summarize": "dataset_check",
    "verify": "dataset_check",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
