"""A blinded reader study: real and generated CT slices in pairs, as a static web page, and its answer key.

The paper's qualitative test: readers see pairs of full axial slices, one from
a real CT and one from a generated CT at the same relative position, and pick
the one they believe is real. ``build_study`` writes

- ``OUTPUT_DIR/study/``: ``index.html`` and ``img/*.png``, a page that opens
  from a file (no server, no network) and lets a reader download their answers;
  it is what readers get, and it carries no truth: image names are random
  tokens, sides are not stored, and no source names, ids or dates appear;
- ``OUTPUT_DIR/key.json``: which side is real in each trial, the seeds, the
  slices and, per volume pair, the pseudonymous volume ids (and the real
  volume's patient key); it stays with the organiser, outside the page. It
  holds no source paths or file names: a folder is often named after the
  patient. The organiser finds a source again by its position in sorted order
  or by reading it and comparing ``volume_id`` (same salt).

Two seeds: ``seed`` chooses the slices (so two generators can be shown on
the same slices; it may be public), ``blinding_seed`` the real sides, the
order, the image names and the study id. The latter is drawn from the
operating system unless given, and is written only to the key: nothing on the
page is derived from a guessable number, so nobody can rebuild the key by
trying seeds.

Slices are shown as stored in canonical volumes (cgan_ct.io.volume): anterior at
the top, the patient's right on the viewer's left (radiological convention).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets
import shutil
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from cgan_ct.constants import LUNG_WINDOW, MEDIASTINAL_WINDOW, Window
from cgan_ct.errors import InputError
from cgan_ct.io.image_files import volume_format
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.io.volume_reader import read_volume
from cgan_ct.study.reader_page import page_html

KEY_FORMAT = "cgan-ct-reader-study-key"
STUDY_FOLDER = "study"
KEY_FILE = "key.json"
Z_MARGIN = 0.05  # fraction of slices left out at each end of a volume: partial, mostly-air end slices


WINDOWS = {w.name: w for w in (LUNG_WINDOW, MEDIASTINAL_WINDOW)}


@dataclasses.dataclass(frozen=True)
class SlicePair:
    """Axial slice ``real_slice`` of real volume pair ``volume_pair`` and the generated slice at the same
    relative z position (``relative_z`` in (0, 1), voxel centres)."""

    volume_pair: int
    real_slice: int
    generated_slice: int
    relative_z: float


@dataclasses.dataclass(frozen=True)
class Study:
    """Paths written by ``build_study`` and the number of trials on the page."""

    page: pathlib.Path
    key: pathlib.Path
    trials: int
    seed: int
    blinding_seed: int


def resolve_windows(name: str) -> tuple[str, ...]:
    """``lung``, ``mediastinum`` or ``both`` -> the window names shown."""
    if name == "both":
        return tuple(WINDOWS)
    if name not in WINDOWS:
        raise InputError(None, f"window must be lung, mediastinum or both, got {name!r}")
    return (name,)


def volume_paths(path: str | os.PathLike) -> list[pathlib.Path]:
    """One volume, or a folder of volumes in sorted order.

    ``path`` is a volume file or DICOM series folder (one volume), or a folder
    that directly holds volume files (.nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr),
    or a folder holding only sub-folders, each one DICOM series.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not path.is_dir():
        return [path]
    children = sorted(path.iterdir())
    files = [c for c in children if c.is_file() and not c.name.startswith(".")]
    volume_files = [c for c in files if volume_format(c)]
    if volume_files:
        return volume_files
    folders = [c for c in children if c.is_dir() and not c.name.startswith(".")]
    return folders if folders and not files else [path]


def pair_inputs(real: str | os.PathLike, generated: str | os.PathLike) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """Real and generated volumes paired by sorted order; their counts must match."""
    reals, generateds = volume_paths(real), volume_paths(generated)
    if len(reals) != len(generateds):
        raise InputError(generated, f"holds {len(generateds)} volumes but {real} holds {len(reals)}; pairs need both")
    return list(zip(reals, generateds, strict=True))


def allot(pairs: int, volume_pairs: int, rng: np.random.Generator) -> list[int]:
    """How many slice pairs to take from each volume pair: as even as possible, remainders at random."""
    counts = np.full(volume_pairs, pairs // volume_pairs)
    counts[rng.choice(volume_pairs, pairs % volume_pairs, replace=False)] += 1
    return [int(c) for c in counts]


def pick_slices(real_depth: int, generated_depth: int, count: int, rng: np.random.Generator) -> list[tuple]:
    """``count`` distinct real slice indices spread over z, each with the generated slice at the same relative z.

    The real z extent, less ``Z_MARGIN`` at each end, is cut into ``count`` equal
    strata and one slice is drawn from each. Returns sorted
    ``(real_slice, generated_slice, relative_z)`` tuples.
    """
    low = int(np.floor(real_depth * Z_MARGIN))
    high = real_depth - low
    if count > high - low:
        raise ValueError(f"{count} slice pairs asked of a volume with {high - low} usable slices")
    bounds = [int(np.floor(low + i * (high - low) / count)) for i in range(count)] + [high]
    picks = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        k = int(rng.integers(start, stop))
        relative_z = (k + 0.5) / real_depth
        picks.append((k, min(generated_depth - 1, int(relative_z * generated_depth)), relative_z))
    return picks


def window_uint8(image_hu: np.ndarray, window: Window) -> np.ndarray:
    """HU -> uint8 grey levels, ``window.low_hu`` black and ``window.high_hu`` white, linear between."""
    scaled = (np.asarray(image_hu, np.float32) - window.low_hu) / window.width_hu
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def field_of_view_mm(shape_yx: Sequence[int], pixel_mm_yx: Sequence[float]) -> float:
    """The larger in-plane extent of a slice, in mm."""
    return max(shape_yx[0] * pixel_mm_yx[0], shape_yx[1] * pixel_mm_yx[1])


def fit_slice(image_hu: np.ndarray, pixel_mm_yx: Sequence[float], display_mm: float, size_px: int) -> np.ndarray:
    """An axial slice (y, x) in HU resampled to ``display_mm`` per display pixel, centred on a square.

    Pixels stay square in mm (no distortion), so slices of different matrix
    size or pixel spacing show anatomy at the same scale. The margin is
    filled with the slice's own border value (its air or outside-FOV value).
    Returns float32 HU, shape (size_px, size_px).
    """
    image_hu = np.asarray(image_hu, np.float32)
    rows = max(1, min(size_px, round(image_hu.shape[0] * pixel_mm_yx[0] / display_mm)))
    cols = max(1, min(size_px, round(image_hu.shape[1] * pixel_mm_yx[1] / display_mm)))
    if (rows, cols) != image_hu.shape:
        image_hu = np.asarray(Image.fromarray(image_hu).resize((cols, rows), Image.Resampling.LANCZOS))
    border = np.concatenate([image_hu[0], image_hu[-1], image_hu[:, 0], image_hu[:, -1]])
    canvas = np.full((size_px, size_px), np.median(border), np.float32)
    top, left = (size_px - rows) // 2, (size_px - cols) // 2
    canvas[top : top + rows, left : left + cols] = image_hu
    return canvas


def render_pair(real_hu: np.ndarray, real_mm_yx, generated_hu: np.ndarray, generated_mm_yx, window, size_px: int):
    """Two axial slices (y, x) in HU with their pixel spacing (y, x) in mm -> (real, generated) uint8 images of
    (size_px, size_px), windowed, on one common scale: the larger field of view of the two fills the image."""
    display_mm = max(field_of_view_mm(real_hu.shape, real_mm_yx), field_of_view_mm(generated_hu.shape, generated_mm_yx))
    display_mm /= size_px
    return (
        window_uint8(fit_slice(real_hu, real_mm_yx, display_mm, size_px), window),
        window_uint8(fit_slice(generated_hu, generated_mm_yx, display_mm, size_px), window),
    )


def _image_names(count: int, rng: np.random.Generator) -> list[str]:
    """Random, distinct PNG names: they say nothing about side, source or order."""
    names: set[str] = set()
    while len(names) < count:
        names.add(rng.bytes(8).hex() + ".png")
    return [str(n) for n in rng.permutation(sorted(names))]


def _balanced_sides(count: int, rng: np.random.Generator) -> list[str]:
    """Real on the left in half of ``count`` trials (the odd one at random), in random order."""
    sides = ["left"] * (count // 2) + ["right"] * (count // 2)
    if count % 2:
        sides.append(str(rng.choice(["left", "right"])))
    return [str(s) for s in rng.permutation(sides)]


def plan_trials(picks: list[SlicePair], windows: Sequence[str], rng: np.random.Generator) -> list[dict]:
    """One trial per pick and window: its number on the page, real side and image names.

    Real sides are balanced within each window; the page order is a random
    permutation. Returns key rows sorted by trial number.
    """
    sides = {w: _balanced_sides(len(picks), rng) for w in windows}
    count = len(picks) * len(windows)
    names = iter(_image_names(2 * count, rng))
    numbers = iter(rng.permutation(count) + 1)
    trials = []
    for p, pick in enumerate(picks):
        for window in windows:
            trials.append(
                {
                    "trial": int(next(numbers)),
                    "window": window,
                    "real_side": sides[window][p],
                    "left_image": next(names),
                    "right_image": next(names),
                    **dataclasses.asdict(pick),
                }
            )
    return sorted(trials, key=lambda t: t["trial"])


def _pick_all(pairs: list[tuple], quota: list[int], rng: np.random.Generator, progress) -> tuple[list, dict, list]:
    """Reads each needed volume pair once: its picks, per (volume pair, real slice) the two axial slices
    with their pixel spacing, so that whole volumes can be let go, and per volume pair its pseudonymous ids
    (None for a pair that no trial needed, which is not read)."""
    picks, slices, sources = [], {}, []
    for v, ((real_path, generated_path), count) in enumerate(zip(pairs, quota, strict=True)):
        if count:
            real, generated = read_volume(real_path), read_volume(generated_path)
            sources.append(_source(v, real.volume_id, real.patient_key, generated.volume_id))
            try:
                chosen = pick_slices(real.shape[0], generated.shape[0], count, rng)
            except ValueError as exc:
                raise InputError(real_path, str(exc)) from None
            for k, g, z in chosen:
                picks.append(SlicePair(v, k, g, round(z, 6)))
                slices[v, k] = (
                    real.hu[k].copy(),
                    real.spacing_mm[1:],
                    generated.hu[g].copy(),
                    generated.spacing_mm[1:],
                )
        else:
            sources.append(_source(v, None, None, None))
        if progress:
            progress(v + 1, len(pairs))
    return picks, slices, sources


def _source(volume_pair: int, real_id: str | None, patient_key: str | None, generated_id: str | None) -> dict:
    """A key row naming a volume pair by pseudonyms only: never by path, since folders carry patient names."""
    return {
        "volume_pair": volume_pair,
        "real_volume_id": real_id,
        "real_patient_key": patient_key,
        "generated_volume_id": generated_id,
    }


def _check_arguments(pairs: int, size_px: int, output: pathlib.Path) -> None:
    if pairs < 1:
        raise InputError(None, f"pairs must be at least 1, got {pairs}")
    if not 64 <= size_px <= 2048:
        raise InputError(None, f"size_px must be 64..2048, got {size_px}")
    for taken in (output / STUDY_FOLDER, output / KEY_FILE):
        if taken.exists():
            raise InputError(taken, "already exists; not overwriting a study or its key")


def build_study(
    real: str | os.PathLike,
    generated: str | os.PathLike,
    output_dir: str | os.PathLike,
    pairs: int = 20,
    window: str = "lung",
    seed: int = 0,
    size_px: int = 512,
    blinding_seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Study:
    """Writes a reader study (``output_dir/study/``) and its key (``output_dir/key.json``).

    Args:
      real, generated: one volume each (file or DICOM folder), or folders of
        volumes paired by sorted order (see ``volume_paths``).
      pairs: slice pairs to show; with ``window="both"`` each is shown once in
        each window, as separate trials.
      window: ``lung`` (W1500 L-600), ``mediastinum`` (W400 L40) or ``both``.
      seed: chooses the slices; the same seed and inputs give the same slices.
      size_px: displayed images are size_px x size_px.
      blinding_seed: real sides, trial order, image names and study id; as
        secret as the key, which records it. Default: 128 random bits from the
        operating system. Given with ``seed``, the study is rebuilt exactly.
      progress: called with (volume pairs done, total).
    """
    output = pathlib.Path(output_dir)
    windows = resolve_windows(window)
    _check_arguments(pairs, size_px, output)
    volume_pairs = pair_inputs(real, generated)
    blinding_seed = secrets.randbits(128) if blinding_seed is None else int(blinding_seed)
    pick_rng = np.random.default_rng(int(seed))
    plan_rng, id_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(blinding_seed).spawn(2))
    picks, slices, sources = _pick_all(volume_pairs, allot(pairs, len(volume_pairs), pick_rng), pick_rng, progress)
    trials = plan_trials(picks, windows, plan_rng)
    study_id = "study-" + id_rng.bytes(8).hex()
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".tmp-{STUDY_FOLDER}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_images(staging / "img", trials, slices, size_px)
        (staging / "index.html").write_text(page_html(study_id, trials, WINDOWS, size_px), encoding="utf-8")
        os.replace(staging, output / STUDY_FOLDER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    key = {"study_id": study_id, "seed": int(seed), "blinding_seed": blinding_seed, "window": window}
    write_json_atomic(output / KEY_FILE, _key(key, size_px, sources, windows, trials))
    return Study(output / STUDY_FOLDER / "index.html", output / KEY_FILE, len(trials), int(seed), blinding_seed)


def _key(head: dict, size_px: int, sources: list[dict], windows: Sequence[str], trials: list[dict]) -> dict:
    """The key file's content: the study's identity and seeds, its sources (pseudonyms), and one row per trial."""
    return {
        "format": KEY_FORMAT,
        "version": 2,  # 2: volume_pairs hold pseudonyms, not source paths
        **head,
        "blinding_seed": str(head["blinding_seed"]),  # a string: 128 bits overflow JSON readers' doubles
        "size_px": size_px,
        "volume_pairs": sources,
        "windows": {w: dataclasses.asdict(WINDOWS[w]) for w in windows},
        "trials": trials,
    }


def _write_images(folder: pathlib.Path, trials: list[dict], slices: dict, size_px: int) -> None:
    folder.mkdir(parents=True)
    for trial in trials:
        images = render_pair(*slices[trial["volume_pair"], trial["real_slice"]], WINDOWS[trial["window"]], size_px)
        left, right = images if trial["real_side"] == "left" else images[::-1]
        Image.fromarray(left).save(folder / trial["left_image"])
        Image.fromarray(right).save(folder / trial["right_image"])
