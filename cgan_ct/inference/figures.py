"""Evaluation figures for a person: one axial slice of the condition, the model, the best classical baseline
and the original, in the lung and the soft-tissue window; the model's and the baseline's errors on one
scale; and a close-up where the model's error differs most from the baseline's inside the body.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``, saved through its Agg canvas; never
pyplot, so no window and no global state), imported inside the drawing functions: modules that only
compute never load matplotlib. The ``draw_*`` functions return the Figure unsaved, for tests and notebooks.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from cgan_ct.constants import LUNG_WINDOW, MEDIASTINAL_WINDOW
from cgan_ct.inference import report
from cgan_ct.inference.metrics import psnr_db
from cgan_ct.ops.body_mask import body_mask

WINDOWS = ((LUNG_WINDOW, "Lung window"), (MEDIASTINAL_WINDOW, "Soft-tissue window"))  # the figures' rows
CLOSEUP_PX = 32  # side of the close-up, in voxels of the slice
IN_BODY = 0.95  # share of a close-up's voxels that must be body (lungs and airways count as body)
ERROR_FLOOR_HU = 10.0  # the least top of the error scale: a near-perfect pair shows its noise as noise
PANEL_INCHES = 3.2
DPI = 140  # a panel about 420 px: most of a 512 x 512 slice's detail
TITLE_PT = 9
BOX_COLOUR = "#ffd000"


@dataclasses.dataclass(frozen=True)
class FigureSlice:
    """One axial slice (y, x) in HU of each volume an evaluation compares, and whose it is.

    ``patient``: the pseudonymous patient key; ``index`` of ``depth``: the slice and the volume's slice
    count; ``baseline_name``: the classical method with the best PSNR on this volume
    (``report.best_baseline``), ``baseline`` its slice.
    """

    task: str
    patient: str
    index: int
    depth: int
    original: np.ndarray
    condition: np.ndarray
    model: np.ndarray
    baseline_name: str
    baseline: np.ndarray


def figure_slice_index(depth: int) -> int:
    """The axial slice the figures show: the middle one."""
    return depth // 2


def figure_slice(original_hu: np.ndarray, patient: str, task: str, methods: dict, rows: list[dict]) -> FigureSlice:
    """The slice the figures show of ``original_hu`` (z, y, x) and of ``methods`` (name -> volume in HU,
    "model" and "condition" among them). Of the baselines only the best one's slice is kept (by slice PSNR
    over the volume in the evaluation's ``rows``), not its volume."""
    best = report.best_baseline({r["method"]: r["psnr_slices_db"] for r in rows if r["region"] == "volume"})
    depth = original_hu.shape[0]
    k = figure_slice_index(depth)

    def at(volume):
        return np.array(volume[k], np.float32)  # a copy: the volume it came from can be freed

    return FigureSlice(
        task, patient, k, depth, at(original_hu), at(methods["condition"]), at(methods["model"]),
        best, at(methods[best]),
    )  # fmt: skip


def window_means(image: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``image`` (y, x) over every size x size window, indexed by the window's top-left corner:
    shape (y - size + 1, x - size + 1). A summed-area table: exact, and one pass whatever the size."""
    table = np.pad(np.asarray(image, np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return sums / size**2


def slice_body(original_hu: np.ndarray) -> np.ndarray:
    """The body (``ops.body_mask``) of one axial slice (y, x), boolean."""
    return body_mask(np.asarray(original_hu)[None])[0]


def closeup_origin(
    original: np.ndarray, model: np.ndarray, baseline: np.ndarray, size: int = CLOSEUP_PX, body=None
) -> tuple[int, int]:
    """Top-left (y, x) of the size x size region of an axial slice (HU) where the model's error differs
    most from the baseline's: the largest |mean of (|model - original| - |baseline - original|)| over the
    region, among regions at least ``IN_BODY`` inside ``body`` (default: the slice's body mask); among
    those touching the body where none is, and anywhere where the slice has no body."""
    size = min(size, *original.shape)
    original = np.asarray(original, np.float32)
    difference = np.abs(np.asarray(model, np.float32) - original) - np.abs(np.asarray(baseline, np.float32) - original)
    score = np.abs(window_means(difference, size))
    inside = window_means(slice_body(original) if body is None else body, size)
    for allowed in (inside >= IN_BODY, inside > 0, np.ones_like(inside, bool)):
        if allowed.any():
            break
    y, x = np.unravel_index(np.argmax(np.where(allowed, score, -np.inf)), score.shape)
    return int(y), int(x)


def error_scales_hu(s: FigureSlice, body=None) -> tuple[float, float]:
    """Tops of the two colour scales: |error|, one scale for the model and the baseline, and the signed
    difference of their |errors|. Each: the 99th percentile inside the body (``ERROR_FLOOR_HU`` at least),
    rounded up to 1, 2 or 5 x 10^n HU."""
    inside = slice_body(s.original) if body is None else body
    if not inside.any():
        inside = np.ones_like(inside)
    model, baseline = (np.abs(np.asarray(v, np.float32) - s.original)[inside] for v in (s.model, s.baseline))
    return _nice_top(np.concatenate([model, baseline])), _nice_top(np.abs(model - baseline))


def _nice_top(values_hu: np.ndarray) -> float:
    top = max(float(np.percentile(values_hu, 99)), ERROR_FLOOR_HU)
    power = 10 ** np.floor(np.log10(top))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= top))


def _panels(s: FigureSlice) -> list[tuple[str, np.ndarray]]:
    return [
        ("condition", s.condition),
        ("model", s.model),
        (f"{s.baseline_name} (best baseline)", s.baseline),
        ("original", s.original),
    ]


def _psnr_text(original: np.ndarray, image: np.ndarray) -> str:
    return "reference" if image is original else f"PSNR {psnr_db(original, image):.2f} dB"


def _new_figure(rows: int, columns: int):
    from matplotlib.figure import Figure  # not pyplot: no window, no global state; saved through Agg

    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.5), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure, axes


def draw_comparison(s: FigureSlice, region=None, scales_hu: tuple | None = None, box=None):
    """The Figure (unsaved): rows lung window and soft-tissue window of condition | model | best baseline |
    original, then |model - original| | |baseline - original| on one scale and the difference of the two
    (``scales_hu``: their tops, default ``error_scales_hu``). ``region``: (y0, x0, size) to draw only that
    square (a close-up), else the whole slice; ``box``: (y0, x0, size) outlined on the images. Each title:
    method, patient, PSNR over what is drawn."""
    from matplotlib.patches import Rectangle

    crop = (slice(None), slice(None)) if region is None else _square(*region)
    panels = [(label, np.asarray(image, np.float32)[crop]) for label, image in _panels(s)]
    original = panels[-1][1]
    scales_hu = error_scales_hu(s) if scales_hu is None else scales_hu
    figure, axes = _new_figure(3, 4)
    nearest = "nearest" if region is not None else "antialiased"
    for row, (window, name) in enumerate(WINDOWS):
        axes[row, 0].set_ylabel(f"{name}\n{window.low_hu:g} to {window.high_hu:g} HU", fontsize=TITLE_PT)
        for ax, (label, image) in zip(axes[row], panels, strict=True):
            ax.imshow(image, cmap="gray", vmin=window.low_hu, vmax=window.high_hu, interpolation=nearest)
            ax.set_title(f"{label}\n{s.patient} · {_psnr_text(original, image)}", fontsize=TITLE_PT)
            if box is not None:
                y0, x0, size = box
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor=BOX_COLOUR, lw=1.2))
    _draw_errors(figure, axes[2], s, panels, scales_hu, nearest)
    where = (
        "the slice" if region is None else f"the {region[2]} x {region[2]} close-up at (y {region[0]}, x {region[1]})"
    )
    figure.suptitle(
        f"{s.task}: patient {s.patient}, axial slice {s.index + 1} of {s.depth}; PSNR over {where}"
        + ("; box: the close-up" if box is not None else ""),
        fontsize=TITLE_PT + 1,
    )
    return figure


def _draw_errors(figure, axes, s: FigureSlice, panels, scales_hu: tuple, interpolation: str) -> None:
    """|model - original| and |baseline - original| on one scale, and the difference of the two."""
    scale_hu, difference_hu = scales_hu
    original = panels[-1][1]
    errors = [np.abs(panels[i][1] - original) for i in (1, 2)]
    for ax, (label, image), error in zip(axes[:2], (panels[1], panels[2]), errors, strict=True):
        name = label.split(" (")[0]
        shown = ax.imshow(error, cmap="inferno", vmin=0, vmax=scale_hu, interpolation=interpolation)
        ax.set_title(f"|{name} − original|\n{s.patient} · {_psnr_text(original, image)}", fontsize=TITLE_PT)
    difference = axes[2].imshow(
        errors[0] - errors[1], cmap="RdBu_r", vmin=-difference_hu, vmax=difference_hu, interpolation=interpolation
    )
    axes[2].set_title(f"|model error| − |{s.baseline_name} error|\n{s.patient} · red: model worse", fontsize=TITLE_PT)
    # both scales in the last cell, so that the columns above stay aligned
    axes[3].set_axis_off()
    for left, image, label in (
        (0.08, shown, "|error| (HU): both error panels"),
        (0.62, difference, "model's |error| − baseline's (HU)"),
    ):
        bar = figure.colorbar(image, cax=axes[3].inset_axes([left, 0.04, 0.09, 0.92]))
        bar.set_label(label, fontsize=TITLE_PT)
        bar.ax.tick_params(labelsize=TITLE_PT - 1)


def _square(y0: int, x0: int, size: int) -> tuple[slice, slice]:
    return slice(y0, y0 + size), slice(x0, x0 + size)


def write_figures(s: FigureSlice, folder, stem: str, size: int = CLOSEUP_PX) -> list[pathlib.Path]:
    """``{stem}_scan.png`` (the whole slice, the close-up outlined) and ``{stem}_closeup.png`` in
    ``folder``, both on the same error scale; returns their paths."""
    folder = pathlib.Path(folder)
    body = slice_body(s.original)
    size = min(size, *s.original.shape)
    square = (*closeup_origin(s.original, s.model, s.baseline, size, body), size)
    scales_hu = error_scales_hu(s, body)
    paths = []
    for name, kwargs in (("scan", {"box": square}), ("closeup", {"region": square})):
        figure = draw_comparison(s, scales_hu=scales_hu, **kwargs)
        paths.append(folder / f"{stem}_{name}.png")
        figure.savefig(paths[-1], dpi=DPI)
    return paths


def draw_before_after(before: np.ndarray, after: np.ndarray, patient: str, task: str):
    """The Figure (unsaved) for a scan without a reference: input | model output in the lung and the
    soft-tissue window, and |output - input|; one axial slice (y, x) in HU each."""
    before, after = np.asarray(before, np.float32), np.asarray(after, np.float32)
    figure, axes = _new_figure(2, 3)
    for row, (window, name) in enumerate(WINDOWS):
        axes[row, 0].set_ylabel(f"{name}\n{window.low_hu:g} to {window.high_hu:g} HU", fontsize=TITLE_PT)
        for ax, label, image in zip(
            axes[row, :2], ("input (no reference)", f"model ({task})"), (before, after), strict=True
        ):
            ax.imshow(image, cmap="gray", vmin=window.low_hu, vmax=window.high_hu)
            ax.set_title(f"{label}\n{patient}", fontsize=TITLE_PT)
    change = np.abs(after - before)
    shown = axes[0, 2].imshow(change, cmap="inferno", vmin=0, vmax=_nice_top(change))
    axes[0, 2].set_title(f"|model − input|\n{patient} · mean {change.mean():.1f} HU", fontsize=TITLE_PT)
    figure.colorbar(shown, ax=axes[0, 2], label="HU", shrink=0.9)
    axes[1, 2].set_axis_off()
    figure.suptitle(f"{task}, a real scan as it is: patient {patient}", fontsize=TITLE_PT + 1)
    return figure


def before_after_figure(before, after, patient: str, task: str, path) -> pathlib.Path:
    """``draw_before_after`` saved as PNG at ``path``."""
    draw_before_after(before, after, patient, task).savefig(path, dpi=DPI)
    return pathlib.Path(path)
