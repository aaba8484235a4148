"""Inference over an archive: every scan under the inputs, one model load, one folder per scan, resumable.

A scan's outputs go to ``<out>/<scan pseudonym>/`` (the keyed ``vol-...`` id that conversion gives it: never
a path or a UID): the condition and the generated volume in the asked formats, and ``scan.json``, the record
of the scan. They are written into a hidden ``<out>/.partial-<scan>-<host>-<pid>-<hex>/`` folder and renamed
into place once complete, so a scan folder under its final name is always whole; a kill leaves only the
hidden folder, which the next attempt at that scan removes. A scan folder whose ``scan.json`` holds this
request's fingerprint is finished: a rerun keeps it. One that holds another request's is refused before
anything is computed (``foreign_scans``), or replaced with ``overwrite``.

The work splits by scan: ``part_of(scan, num_parts)`` is a stable hash of the pseudonym, so N workers given
``part_id`` 0..N-1 share the same output folder and never touch each other's scans. The per-scan step
(``ScanRunner.run``) is the same for the local loop and for the Beam pipeline (``beam_inference``).

A scan that fails (unreadable, a geometry DICOM cannot hold, ...) yields a ``failed`` row whose reason has
every file and folder name and UID removed; it never stops the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import socket
import time
import uuid

import numpy as np

from cgan_ct.errors import InputError
from cgan_ct.io.json_files import read_json_object, write_json_atomic
from cgan_ct.io.sources import VolumeSource, discover, redact
from cgan_ct.version import __version__

SCAN_RECORD = "scan.json"
NOISE_SLICES = 32  # slices the noise of condition and output is estimated on
RECORD_VERSION = 1
DONE, KEPT, FAILED = "done", "kept", "failed"
_PARTIAL = ".partial-"


@dataclasses.dataclass(frozen=True)
class ScanSettings:
    """What, besides the model and the scan, makes a scan's outputs (cgan-ct-infer's flags)."""

    task: str | None = None
    condition_mode: str = "simulate"
    overlap: float = 0.25
    window: str = "gaussian"
    batch_size: int = 16
    seed: int = 0
    dose: float | None = None
    formats: tuple[str, ...] = ("nifti",)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["formats"] = sorted(self.formats)
        del data["batch_size"]  # changes the speed, not the outputs
        return data


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """How a run names its model: ``spec`` as given (a path or ``pretrained:NAME``), loaded in ``precision``."""

    spec: str
    precision: str = "auto"

    @property
    def name(self) -> str:
        """``pretrained:NAME``, else the model folder's own name (never its whole path)."""
        return self.spec if self.spec.startswith("pretrained:") else pathlib.Path(self.spec).name

    def version(self, model) -> int | str | None:
        """The shipped model's card version, else the version folder loaded (None for a plain folder)."""
        card = pathlib.Path(model.model_dir) / "card.json"
        if self.spec.startswith("pretrained:") and card.is_file():
            return json.loads(card.read_text()).get("version")
        return model.version


def part_of(scan_id: str, num_parts: int) -> int:
    """Which of ``num_parts`` workers handles ``scan_id``: stable across runs, machines and Python versions."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be at least 1, got {num_parts}")
    return int(hashlib.sha256(scan_id.encode()).hexdigest()[:16], 16) % num_parts


def find_scans(inputs, salt: str | None = None, num_parts: int = 1, part_id: int = 0):
    """(this part's scans, inputs that are not scans): every DICOM series and volume file under ``inputs``
    (``sources.discover``), sorted by pseudonym, those of part ``part_id`` of ``num_parts`` kept."""
    if not 0 <= part_id < num_parts:
        raise InputError(None, f"part_id must be in 0..{num_parts - 1} for {num_parts} parts, got {part_id}")
    sources, skipped = discover(inputs, salt)
    return [s for s in sources if part_of(s.volume_id, num_parts) == part_id], skipped


def scan_request(source: VolumeSource, model: ModelRef, settings: ScanSettings) -> str:
    """The fingerprint of what makes one scan's outputs: the scan (its files' stamps), the model and the
    settings. Keyed (``request_key``): it shows no path."""
    from cgan_ct.io.fingerprint import request_key

    inputs = [source.location] if model.name == model.spec else [source.location, model.spec]
    data = {"scan": source.volume_id, "model": model.name, **settings.to_json()}
    if settings.dose is None:
        del data["dose"]
    return request_key(data, inputs)


def read_scan_record(folder: pathlib.Path) -> dict | None:
    """A finished scan folder's record, None where it has none or an unreadable one."""
    try:
        return read_json_object(folder / SCAN_RECORD, "scan record")
    except InputError:
        return None


def foreign_scans(out: pathlib.Path, requests: dict[str, str]) -> list[str]:
    """Scan folders already under ``out`` that another request wrote (``requests``: scan id -> this run's)."""
    found = []
    for scan, request in requests.items():
        folder = out / scan
        if os.path.lexists(folder):
            record = read_scan_record(folder) if folder.is_dir() else None
            if record is None or record.get("request") != request:
                found.append(scan)
    return found


def _partial_owner_alive(name: str) -> bool:
    """Whether the process that made a ``.partial-<scan>-<host>-<pid>-<hex>`` folder still runs on this host."""
    from cgan_ct.io.atomic_files import process_alive

    *_, host, pid, _hex = name.rsplit("-", 3)
    return host == _host() and pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid))


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def remove_partials(out: pathlib.Path, scan: str) -> None:
    """The hidden folders a killed attempt at ``scan`` left (its own worker's, or a dead process's here)."""
    for entry in out.glob(f"{_PARTIAL}{scan}-*"):
        if _partial_owner_alive(entry.name):
            raise InputError(out / scan, f"another process is writing this scan ({entry.name})")
        shutil.rmtree(entry, ignore_errors=True)


class ScanRunner:
    """The per-scan step: a loaded model, the settings and the output folder; ``run(source)`` -> row."""

    def __init__(self, model, ref: ModelRef, settings: ScanSettings, out, salt: str | None, overwrite=False):
        self.model, self.ref, self.settings = model, ref, settings
        self.out, self.salt, self.overwrite = pathlib.Path(out), salt, overwrite
        self.version = ref.version(model)

    def run(self, source: VolumeSource) -> dict:
        """One scan: kept when finished earlier for this request, else computed; a ``failed`` row on error."""
        request = scan_request(source, self.ref, self.settings)
        final = self.out / source.volume_id
        if not self.overwrite and final.is_dir() and (read_scan_record(final) or {}).get("request") == request:
            return {"scan": source.volume_id, "status": KEPT}
        start = time.monotonic()
        try:
            record = self._compute(source, request, final, start)
        except Exception as exc:  # noqa: BLE001  (one scan's failure, whatever it is, must not end the run)
            known = isinstance(exc, (InputError, ValueError, OSError))
            text = str(exc) if known else f"{type(exc).__name__}: {exc}"  # an unexpected one names its kind
            reason = redact(" ".join(text.split()), source.location)
            return {"scan": source.volume_id, "status": FAILED, "reason": reason}
        return {"scan": source.volume_id, "status": DONE, "seconds": record["seconds"]}

    def _compute(self, source: VolumeSource, request: str, final: pathlib.Path, start: float) -> dict:
        from cgan_ct.inference.inference import infer_volume
        from cgan_ct.io.volume_formats import output_names, write_volume_as

        self.out.mkdir(parents=True, exist_ok=True)
        remove_partials(self.out, source.volume_id)
        staging, replaced = _partial(self.out, source.volume_id), _partial(self.out, source.volume_id)
        staging.mkdir()
        try:
            volume = source.read(self.salt)
            s = self.settings
            condition, generated = infer_volume(
                volume, self.model, s.task, s.condition_mode, s.overlap, s.window, s.batch_size, s.seed, dose=s.dose
            )
            for name, made in (("condition", condition), ("generated", generated)):
                for fmt, file in output_names(name, s.formats).items():
                    text, synthetic = self.derivation(name)
                    write_volume_as(made, staging / file, fmt, name, derivation=text, synthetic_data=synthetic)
            record = self._record(source, request, condition, generated, time.monotonic() - start)
            write_json_atomic(staging / SCAN_RECORD, record)
            if os.path.lexists(final):  # overwrite: the old folder goes only once the new one is complete
                os.rename(final, replaced)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(replaced, ignore_errors=True)
        return record

    def describe(self) -> dict:
        """The model as records name it: name, version, task and the precision it computes in."""
        return {
            "name": self.ref.name,
            "version": self.version,
            "task": self.model.task,
            "precision": self.model.precision.name,
        }

    def derivation(self, name: str) -> tuple[str, bool]:
        """What a derived DICOM series says of itself (which model made it), and whether its content is made
        rather than acquired (DICOM's Synthetic Data): the generated volume and a simulated condition are."""
        return derivation(
            name, self.ref.name, self.version, self.settings.task or self.model.task, self.settings.condition_mode
        )

    def _record(self, source, request, condition, generated, seconds) -> dict:
        from cgan_ct.ops.noise_level import TISSUE_HU, global_noise_hu, noise_regions

        # on at most NOISE_SLICES evenly spaced slices: the estimator works slice by slice, and the whole
        # volume cost ~7 s a 512 x 512 x 100 scan, more than the one model load an archive run saves
        picked = np.unique(np.linspace(0, condition.shape[0] - 1, NOISE_SLICES).round().astype(int))
        inside, _ = noise_regions(condition.hu[picked])
        noise = {
            name: global_noise_hu(made.hu[picked], made.spacing_mm, inside, TISSUE_HU)
            for name, made in (("condition", condition), ("generated", generated))
        }
        return {
            "format_version": RECORD_VERSION,
            "request": request,
            "scan": source.volume_id,
            "patient": condition.patient_key,
            "model": self.describe(),
            "settings": self.settings.to_json(),
            "shape": list(condition.shape),
            "seconds": round(seconds, 3),
            "noise_tissue_hu": {k: (None if v != v else v) for k, v in noise.items()},  # NaN: too little tissue
            "cgan_ct_version": __version__,
        }


def derivation(name: str, model: str, version, task: str, condition_mode: str) -> tuple[str, bool]:
    """(DerivationDescription words, Synthetic Data) of the ``condition`` or ``generated`` volume of a run."""
    model = f"{model} version {version}" if version is not None else model
    if name == "generated":
        return f"generated by {model} ({task}) from the scan", True
    if condition_mode == "simulate":
        return f"the scan with the {task} condition simulated, the input of {model}", True
    return f"the scan as given to {model}", False


def _partial(out: pathlib.Path, scan: str) -> pathlib.Path:
    """A new hidden folder name for work on ``scan`` by this process (``remove_partials`` knows the pattern)."""
    return out / f"{_PARTIAL}{scan}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def summary(rows: list[dict], skipped, model: dict, settings: ScanSettings, extra: dict) -> dict:
    """The run summary: ``model`` (``ScanRunner.describe``), counts, one row per scan (and per input that held
    no scan), no paths."""
    counts = {status: sum(r["status"] == status for r in rows) for status in (DONE, KEPT, FAILED)}
    return {
        "format_version": RECORD_VERSION,
        "model": model,
        "settings": settings.to_json(),
        "counts": {**counts, "not_scans": len(skipped)},
        "scans": rows,
        "not_scans": [s.to_json() for s in skipped],
        "cgan_ct_version": __version__,
        **extra,
    }


def summary_name(num_parts: int, part_id: int) -> str:
    """``summary.json``, or one per part where several workers share the output folder."""
    return "summary.json" if num_parts == 1 else f"summary-part{part_id}-of-{num_parts}.json"


def write_summary(out: pathlib.Path, name: str, data: dict) -> pathlib.Path:
    out.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(out / name, data)
