"""Volumes and files: the in-memory ``Volume`` and its geometry (``volume``), reading any CT input
(``volume_reader.read_volume``: DICOM series through ``dicom_reader``; NIfTI, MetaImage, NRRD through
SimpleITK in ``image_files``), writing de-identified DICOM (``dicom_writer``) and NIfTI (``image_files``),
finding the volumes under input folders, the pseudonymous ids that replace patient identifiers, and JSON
files written atomically.

Everything that touches a patient's file passes through here, so this is where identifying attributes
are dropped. May import ``ops`` (never the models or the datasets).
"""

from cgan_ct.lazy_exports import lazy_exports

# Rooms this one may import besides the top-level modules (config, constants, errors); tests/test_layout.py checks.
MAY_IMPORT = ("ops",)

# public name -> the module of this room that defines it; imported on first use
_EXPORTS = {
    "AcquisitionInfo": "volume",
    "Volume": "volume",
    "VolumeSource": "sources",
    "discover": "sources",
    "hu_to_int16": "volume",
    "pseudonym": "pseudonym",
    "read_dicom_series": "dicom_reader",
    "read_volume": "volume_reader",
    "subsample_volume": "volume",
    "volume_format": "image_files",
    "write_dicom_series": "dicom_writer",
    "write_json_atomic": "json_files",
    "write_nifti": "image_files",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
