"""Nothing that identifies a patient survives read -> write, in any byte of any output."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pydicom

from cgan_ct import read_volume, write_dicom_series, write_nifti
from tests.conftest import REPO
from tests.dicom_factory import random_hu, write_ct_series

IDENTIFYING = {
    "PatientName": "Zyxwick^Honoria",
    "PatientID": "MRN99887766",
    "PatientBirthDate": "19450203",
    "PatientSex": "F",
    "OtherPatientIDs": "ALTID4433",
    "PatientAddress": "17 Quillfeather Lane",
    "StudyDate": "20110912",
    "SeriesDate": "20110913",
    "StudyTime": "134501",
    "AccessionNumber": "ACC55443322",
    "InstitutionName": "Saint Quibble Hospital",
    "InstitutionAddress": "Marrowgate Road",
    "ReferringPhysicianName": "Dr^Plumtree",
    "OperatorsName": "Tech^Wobbleton",
    "StudyID": "STUDY777123",
    "StudyDescription": "Quibble chest protocol",
    "SeriesDescription": "Honoria lung 5mm",
    "StationName": "QUIBBLECT01",
    "DeviceSerialNumber": "SN31415926",
    "StudyInstanceUID": "1.2.826.0.1.3680043.2.999111.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.2.999111.2",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.2.999111.3",
}
SOP_UID_ROOT = "1.2.826.0.1.3680043.2.999111.4."


def _secret_strings() -> list[bytes]:
    values = [v for k, v in IDENTIFYING.items() if k != "PatientSex"]
    values += ["Zyxwick", "Honoria", "Quibble", "999111"]
    return [v.encode() for v in values]


def _write_source(folder):
    per_slice = {i: {"SOPInstanceUID": f"{SOP_UID_ROOT}{i + 1}"} for i in range(4)}
    write_ct_series(
        folder,
        random_hu((4, 16, 16)),
        tags=IDENTIFYING,
        per_slice_tags=per_slice,
        series_uid=IDENTIFYING["SeriesInstanceUID"],
    )
    assert pydicom.dcmread(folder / "slice000.dcm").PatientName == IDENTIFYING["PatientName"]


def _assert_clean(paths):
    checked = 0
    for path in paths:
        data = path.read_bytes() if hasattr(path, "read_bytes") else path
        for secret in _secret_strings():
            assert secret not in data, f"{secret!r} leaked into {path if hasattr(path, 'name') else 'output'}"
        checked += 1
    assert checked > 0


def test_read_then_write_carries_no_identifier(tmp_path):
    _write_source(tmp_path / "src")
    volume = read_volume(tmp_path / "src", salt="test-salt")
    for text in (volume.volume_id, volume.patient_key, repr(volume.acquisition), *volume.warnings):
        _assert_clean([text.encode()])
    write_dicom_series(volume, tmp_path / "out")
    write_nifti(volume, tmp_path / "out.nii.gz")
    write_nifti(volume, tmp_path / "out.nii")
    outputs = sorted((tmp_path / "out").iterdir()) + [tmp_path / "out.nii.gz", tmp_path / "out.nii"]
    _assert_clean(outputs)
    ds = pydicom.dcmread(outputs[0])
    assert ds.PatientName == "" and ds.PatientID == volume.patient_key
    assert ds.PatientIdentityRemoved == "YES"


def test_info_tool_output_and_copies_carry_no_identifier(tmp_path):
    _write_source(tmp_path / "src")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.info",
            str(tmp_path / "src"),
            "--write_dicom",
            str(tmp_path / "copy"),
            "--write_nifti",
            str(tmp_path / "copy.nii.gz"),
        ],
        capture_output=True,
        cwd=REPO,
        check=True,
    )
    _assert_clean([result.stdout, result.stderr])
    _assert_clean(sorted((tmp_path / "copy").iterdir()) + [tmp_path / "copy.nii.gz"])


def test_conversion_outputs_carry_no_identifier(tmp_path):
    from cgan_ct.config import conversion_config
    from cgan_ct.data.conversion import convert

    archive = tmp_path / "Zyxwick_Honoria_archive"
    _write_source(archive / "Honoria_chest")
    write_ct_series(
        archive / "Zyxwick_MR",
        random_hu((2, 8, 8)),
        tags={**IDENTIFYING, "Modality": "MR", "SeriesInstanceUID": "1.2.826.0.1.3680043.2.999111.9"},
    )
    (archive / "Quibble_notes").mkdir()
    (archive / "Quibble_notes" / "Zyxwick_scan.nii.gz").write_bytes(b"not a volume")
    config = conversion_config("smoke", test_fraction=0.0)

    def interrupt(receipt, done, total):
        raise KeyboardInterrupt

    out = tmp_path / "dataset"
    with contextlib.suppress(KeyboardInterrupt):
        convert([archive], out, config, salt="s", workers=1, progress=interrupt)
    unfinished = [p for p in out.rglob("*") if p.is_file()]
    assert any(".work" in str(p) for p in unfinished)
    _assert_clean(unfinished)  # what an interrupted run leaves behind
    report = convert([archive], out, config, salt="s", workers=1)
    assert len(report.manifest.skipped) == 2
    _assert_clean([p for p in out.rglob("*") if p.is_file()])


def test_paired_and_simulated_conversions_carry_no_identifier(tmp_path):
    """A real pair (both series identifying, in identifying folders) and a simulated low dose: no byte leaks."""
    from cgan_ct.config import LowDoseConfig, conversion_config
    from cgan_ct.data.conversion import convert

    _write_source(tmp_path / "Zyxwick_full" / "Honoria_chest")
    low = tmp_path / "Zyxwick_low" / "Honoria_lowdose"
    per_slice = {i: {"SOPInstanceUID": f"{SOP_UID_ROOT}{i + 11}"} for i in range(4)}
    tags = {**IDENTIFYING, "SeriesInstanceUID": "1.2.826.0.1.3680043.2.999111.5"}
    write_ct_series(low, random_hu((4, 16, 16), seed=1), tags=tags, per_slice_tags=per_slice)
    paired = conversion_config("smoke", test_fraction=0.0, condition="paired")
    report = convert(
        [tmp_path / "Zyxwick_full"], tmp_path / "pairs", paired, salt="s", workers=1, condition_inputs=[low.parent]
    )
    assert report.complete and report.manifest.volumes[0].condition_volume_id
    simulated = conversion_config("smoke", test_fraction=0.0, condition="lowdose", lowdose=LowDoseConfig(views=16))
    convert([tmp_path / "Zyxwick_full"], tmp_path / "simulated", simulated, salt="s", workers=1)
    for folder in ("pairs", "simulated"):
        _assert_clean([p for p in (tmp_path / folder).rglob("*") if p.is_file()])


def test_cascade_training_and_synthesis_carry_no_identifier(tmp_path):
    """Everything a cascade writes (datasets, runs, models, synthetic series) is free of the source's identity."""
    from cgan_ct.config import coarse_config, conversion_config, model_config
    from cgan_ct.synthesis.cascade_training import CascadeSettings, train_cascade
    from cgan_ct.synthesis.synthesis import Cascade

    _write_source(tmp_path / "Zyxwick_Honoria" / "Quibble_chest")
    settings = CascadeSettings(
        levels=1,
        size=16,
        stage=model_config("smoke"),
        stage_steps=2,
        coarse=coarse_config("smoke", steps=2),
        conversion=conversion_config("smoke", test_fraction=0.0),
    )
    messages = []
    folder = train_cascade([tmp_path / "Zyxwick_Honoria"], tmp_path / "out", settings, messages.append, workers=1)
    volume = Cascade(folder).synthesize(0, 4)
    write_dicom_series(volume, tmp_path / "syn", synthetic=True)
    write_nifti(volume, tmp_path / "syn.nii.gz")
    assert (tmp_path / "out" / "runs" / "coarse_calibration.json").is_file()  # calibrated by default: scanned
    assert (tmp_path / "out" / "runs" / "output_calibration.json").is_file()  # so is the output
    _assert_clean([m.encode() for m in messages])
    _assert_clean([p for p in (tmp_path / "out").rglob("*") if p.is_file()])
    _assert_clean(sorted((tmp_path / "syn").iterdir()) + [tmp_path / "syn.nii.gz"])


def test_skip_reasons_name_no_file_or_folder(tmp_path):
    """Files named after the patient or by their SOP Instance UID (no extension), in folders named after
    the patient: every skip reason names the input by pseudonym and position only."""
    from cgan_ct.config import conversion_config
    from cgan_ct.data.conversion import convert

    archive = tmp_path / "Zyxwick^Honoria 19450203"
    names = [f"Zyxwick_Honoria_{i}" for i in range(3)]
    write_ct_series(archive / "Honoria_chest", random_hu((3, 6, 6)), tags=IDENTIFYING, names=names)
    (archive / "Honoria_chest" / names[-1]).write_bytes((archive / "Honoria_chest" / names[-1]).read_bytes()[:400])
    uid_names = [f"{SOP_UID_ROOT}{i + 1}" for i in range(3)]
    series = {**IDENTIFYING, "SeriesInstanceUID": "1.2.826.0.1.3680043.2.999111.7"}
    write_ct_series(archive / "MRN99887766", random_hu((3, 6, 6)), tags=series, names=uid_names)
    write_ct_series(  # a slice of another size in the same series: the error compares two files
        archive / "MRN99887766",
        random_hu((1, 5, 6)),
        tags=series,
        names=["Honoria_odd"],
        origin=(-100.0, -120.0, 57.5),
    )
    write_ct_series(archive / "Honoria_good", random_hu((3, 16, 16)), names=[f"Honoria_{i}.dcm" for i in range(3)])
    out = tmp_path / "dataset"
    report = convert([archive], out, conversion_config("smoke", test_fraction=0.0), salt="s", workers=1)
    assert len(report.manifest.skipped) == 2, report.manifest.skipped
    reasons = [s.reason for s in report.manifest.skipped]
    assert any(r.startswith("file 3 of 3 of the series' folder: truncated DICOM file") for r in reasons), reasons
    assert any("inconsistent rows/columns" in r for r in reasons), reasons
    _assert_clean([p for p in out.rglob("*") if p.is_file()] + [r.encode() for r in reasons])
