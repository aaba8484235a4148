"""cgan-ct: synthetic 3-D CT volumes with conditional GANs.

The library never parses flags or prints; the jobs in ``pipelines/`` and
``tfrecords_tools/`` do.

Importing any part of the package first sets TensorFlow's CPU runtime (oneDNN
on x86, threads that fit the cores): see ``cgan_ct.runtime``.
"""

from cgan_ct.runtime import configure_environment

configure_environment()  # before any module of ours imports TensorFlow

from cgan_ct.dicom_writer import write_dicom_series  # noqa: E402
from cgan_ct.errors import VolumeError  # noqa: E402
from cgan_ct.volume import AcquisitionInfo, Volume  # noqa: E402
from cgan_ct.volume_files import write_nifti  # noqa: E402
from cgan_ct.volume_io import read_volume  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AcquisitionInfo",
    "Volume",
    "VolumeError",
    "read_volume",
    "write_dicom_series",
    "write_nifti",
]
