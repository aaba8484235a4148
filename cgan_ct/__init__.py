"""cgan-ct: synthetic 3-D CT volumes with conditional GANs.

The library never parses flags or prints; the jobs in ``pipelines/`` and
``tfrecords_tools/`` do.
"""

from cgan_ct.dicom_writer import write_dicom_series
from cgan_ct.errors import VolumeError
from cgan_ct.volume import AcquisitionInfo, Volume
from cgan_ct.volume_files import write_nifti
from cgan_ct.volume_io import read_volume

__version__ = "0.1.0"

__all__ = [
    "AcquisitionInfo",
    "Volume",
    "VolumeError",
    "read_volume",
    "write_dicom_series",
    "write_nifti",
]
