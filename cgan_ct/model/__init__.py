"""The conditional GAN: the 3-D U-Net generator and PatchGAN discriminator, the losses, the
``ConditionalGAN`` keras.Model with its train step, training a run (resumable, distributed), the run
record, and exporting the generator as a SavedModel for block inference.

May import ``ops``, ``io`` and ``data`` (training reads datasets). Serving a model (``export``,
``run_record``) never imports the training code (``training``, ``gan``, the input pipeline): a server
has no dataset. A test walks the imports to keep it so.
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops", "io", "data")

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "BlockGenerator": "export",
    "ConditionalGAN": "gan",
    "ModelInfo": "export",
    "RunOptions": "training",
    "RunRecord": "run_record",
    "SessionModel": "session_loader",
    "TrainingResult": "training",
    "build_discriminator": "networks",
    "build_gan": "build",
    "build_generator": "networks",
    "export_generator": "export",
    "export_version": "export",
    "generator_from_export": "export",
    "load_run_generator": "export",
    "resolve_model_dir": "export",
    "save_block_model": "export",
    "save_serving_model": "export",
    "train": "training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
