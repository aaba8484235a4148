"""cgan-ct: synthetic 3-D CT volumes with conditional GANs.

The library never parses flags or prints; the jobs in ``pipelines/`` and
``tfrecords_tools/`` do. It is grouped in rooms, each a subpackage whose
``__init__`` says what it holds and what it may import: ``ops`` (pure CT value
operations), ``io`` (volumes and files), ``data`` (datasets of blocks),
``model`` (the GAN, training, export), ``inference`` (whole scans, metrics,
baselines, evaluation), ``synthesis`` (synthetic CT from noise), ``study`` (the
reader study), ``demo`` and ``cli`` (what only the jobs use). The names below
are the public API of the top; like a room's, they are imported on first use
(``import cgan_ct`` alone reads no DICOM library: a job's ``--help`` stays fast).

Importing any part of the package first sets TensorFlow's CPU runtime (oneDNN
on x86, threads that fit the cores, TensorFlow's C++ logs quiet): see ``cgan_ct.runtime``.
"""

from cgan_ct.runtime import configure_environment

configure_environment()  # before any module of ours imports TensorFlow

from cgan_ct import moved  # noqa: E402
from cgan_ct.errors import InputError, VolumeError  # noqa: E402  (VolumeError: the old name, the same class)
from cgan_ct.lazy_exports import lazy_exports  # noqa: E402
from cgan_ct.version import __version__  # noqa: E402

moved.install()  # the module paths before the rooms still import (deprecated)

# public name -> the module that defines it; imported on first use
_EXPORTS = {
    "AcquisitionInfo": "io.volume",
    "Volume": "io.volume",
    "read_volume": "io.volume_reader",
    "write_dicom_series": "io.dicom_writer",
    "write_nifti": "io.image_files",
}
__all__ = ["__version__", "InputError", "VolumeError", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
