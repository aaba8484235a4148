"""The module paths of cgan-ct 0.1 before the library was grouped into rooms, kept importable.

``import cgan_ct.input_pipeline`` (or ``from cgan_ct import training``) still
works: it returns the module at its new path (the same module object, so
monkeypatching either name patches both) and warns with a DeprecationWarning
naming the new path. Three old modules became their room (``cgan_ct.demo``,
``cgan_ct.inference``, ``cgan_ct.synthesis``: each exports what the old module
did) and ``cgan_ct.coarse_gan`` was split (its names are exported by
``cgan_ct.synthesis``). README.md lists the moves. Later in 0.1 the modules that judge synthetic CT
left ``cgan_ct.synthesis`` for ``cgan_ct.realism`` (``cgan_ct.synthesis.ms_ssim`` still imports, with the
warning). New code imports the new paths: the old ones are removed in cgan-ct ``REMOVED_IN``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.3"  # the release that drops these paths (CHANGELOG.md)

# old module under cgan_ct -> its new path under cgan_ct
MOVED = {
    "volume": "io.volume",
    "slice_geometry": "io.slice_geometry",
    "dicom_io": "io.dicom_reader",
    "dicom_writer": "io.dicom_writer",
    "volume_files": "io.image_files",
    "volume_io": "io.volume_reader",
    "sitk_bridge": "io.sitk_bridge",
    "sources": "io.sources",
    "pseudonym": "io.pseudonym",
    "json_files": "io.json_files",
    "intensity": "ops.intensity",
    "corruption": "ops.corruption",
    "blocks": "ops.blocks",
    "body_mask": "ops.body_mask",
    "lung": "ops.lung",
    "pyramid": "ops.pyramid",
    "schema": "data.schema",
    "tfrecord_io": "data.tfrecord_io",
    "volume_records": "data.volume_records",
    "shard_writer": "data.shard_writer",
    "conversion": "data.conversion",
    "beam_conversion": "data.beam_conversion",
    "manifest": "data.manifest",
    "dataset_check": "data.dataset_check",
    "augment": "data.augment",
    "input_pipeline": "data.input_pipeline",
    "networks": "model.networks",
    "cpu_conv": "model.cpu_conv",
    "losses": "model.losses",
    "gan": "model.gan",
    "training": "model.training",
    "export": "model.export",
    "inference": "inference",
    "evaluation": "inference.evaluation",
    "metrics": "inference.metrics",
    "baselines": "inference.baselines",
    "report": "inference.report",
    "coarse_gan": "synthesis",
    "cascade": "synthesis.cascade",
    "cascade_training": "synthesis.cascade_training",
    "synthesis": "synthesis",
    "synthesis_stats": "realism.synthesis_stats",
    "synthesis_report": "realism.synthesis_report",
    "memorization": "realism.memorization_report",  # the grid search it held: benchmarks/memorization_grid.py
    "reader_study": "study.reader_study",
    "reader_page": "study.reader_page",
    "reader_score": "study.reader_score",
    "demo": "demo",
    "demo_plan": "demo.plan",
    "phantom": "demo.phantom",
    "progress": "cli.progress",
    "fit_progress": "cli.fit_progress",
    # cgan-ct 0.2: judging synthetic CT left the synthesis room for its own (issue 32)
    "synthesis.ms_ssim": "realism.ms_ssim",
    "synthesis.radiomics_frd": "realism.radiomics_frd",
    "synthesis.realism": "realism.realism_table",
    "synthesis.memorization": "realism.memorization_report",
    "synthesis.memorization_report": "realism.memorization_report",
    "synthesis.memorization_search": "realism.memorization_search",
    "synthesis.synthesis_report": "realism.synthesis_report",
    "synthesis.synthesis_stats": "realism.synthesis_stats",
    "synthesis.tissue_sanity": "realism.tissue_sanity",
    # the file readers named for what they read (issue 32)
    "io.volume_io": "io.volume_reader",
    "io.dicom_io": "io.dicom_reader",
    "io.volume_files": "io.image_files",
}


def new_path(old: str) -> str:
    return f"cgan_ct.{MOVED[old]}"


def import_moved(old: str, stacklevel: int = 3):
    """The module that ``cgan_ct.<old>`` became, with a DeprecationWarning."""
    new = new_path(old)
    message = f"cgan_ct.{old} moved to {new}; import it from there (the old path goes in cgan-ct {REMOVED_IN})"
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)
    return importlib.import_module(new)


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``cgan_ct.<old>`` to the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix != "cgan_ct" or old not in MOVED or MOVED[old] == old:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module):
        old = module.__name__.partition(".")[2]
        sys.modules[module.__name__] = import_moved(old, stacklevel=4)


def install() -> None:
    """Makes the old paths importable (once per process)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
