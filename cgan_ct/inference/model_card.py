"""Model cards of the shipped models: rendered from what was recorded, never typed by hand.

A shipped model folder (``cgan_ct/model/pretrained_models/NAME``) holds ``card.json`` (the facts of
its training: data, split, recipe, steps, licence, limitations) and ``scores.json`` (the evaluation
rows on held-out patients, as ``evaluate_inputs`` returns them). ``render_model_card`` turns both into
``MODEL_CARD.md`` in the layout users know from model hubs (intended use, input domain, training data,
results beside the best classical baseline, limitations, licence, version); a test renders every
shipped card again and compares, so a card's figures are always those of its ``scores.json``.
"""

from __future__ import annotations

import json
import pathlib
import statistics

from cgan_ct.inference.report import verdict

CARD_FILE = "card.json"
SCORES_FILE = "scores.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
EXAMPLE_FIGURE = "example.jpg"
EXAMPLE_SLICES = 32  # the example is drawn from this many central slices of a held-out scan
EXAMPLE_DPI = 100

# Where each training or held-out series comes from: collection, licence, where to get it. Keyed by the
# series folder's name prefix in the shared CT sample (../shared/data/ct/README.md).
_TCIA_UNCHECKED = "CC BY 3.0 or 4.0 by collection (not checked: check before redistributing)"
SOURCES = {
    "lung-pet-ct-dx": (
        "TCIA Lung-PET-CT-Dx (Li et al. 2020)",
        "CC BY 4.0",
        "https://doi.org/10.7937/TCIA.2020.NNC2-0461",
    ),
    "covid-ct-md": (
        "COVID-CT-MD (Afshar et al., Scientific Data 8, 121, 2021)",
        "as published with its data descriptor; cite the paper",
        "https://doi.org/10.1038/s41597-021-00900-3",
    ),
    "lidc-idri": (
        "TCIA LIDC-IDRI (Armato et al. 2011)",
        "CC BY 3.0",
        "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX",
    ),
    # added 2026-12-02 (../shared/data/ct/README.md): TCIA publishes these under CC BY 3.0 or 4.0 by
    # collection; the licence of each was not checked against its collection page
    "lungx": ("TCIA SPIE-AAPM Lung CT Challenge (LUNGx)", _TCIA_UNCHECKED, "https://www.cancerimagingarchive.net"),
    "cmb-crc": ("TCIA Cancer Moonshot Biobank CMB-CRC", _TCIA_UNCHECKED, "https://www.cancerimagingarchive.net"),
    "rider": (
        "a RIDER-style pulmonary-embolism study (collection not confirmed)",
        _TCIA_UNCHECKED,
        "https://www.cancerimagingarchive.net",
    ),
    "lungfcp": ("TCIA Lung-Fused-CT-Pathology", _TCIA_UNCHECKED, "https://www.cancerimagingarchive.net"),
    "tcga-ay": ("TCIA TCGA-COAD", _TCIA_UNCHECKED, "https://www.cancerimagingarchive.net"),
    "tcga-bc": ("TCIA TCGA-LIHC", _TCIA_UNCHECKED, "https://www.cancerimagingarchive.net"),
}


def source(series: str) -> tuple[str, str, str]:
    """(collection, licence, address) of a series folder name; an unknown one is named as it is."""
    for prefix, facts in SOURCES.items():
        if series.startswith(prefix):
            return facts
    return (series, "unknown", "-")


def load_card(folder) -> tuple[dict, list[dict]]:
    """``card.json`` and ``scores.json`` of a shipped model folder."""
    folder = pathlib.Path(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    rows = json.loads((folder / SCORES_FILE).read_text())
    return card, rows


def _mean_psnr(rows: list[dict], method: str, region: str) -> float:
    return statistics.fmean(r["psnr_slices_db"] for r in rows if r["method"] == method and r["region"] == region)


def best_baseline(rows: list[dict], region: str = "volume") -> str:
    """The classical method with the highest mean slice PSNR over the patients (not the model, not the input)."""
    methods = sorted({r["method"] for r in rows} - {"model", "condition"})
    return max(methods, key=lambda m: _mean_psnr(rows, m, region))


def headline(rows: list[dict], region: str = "volume") -> dict:
    """Mean slice PSNR (dB) of the condition, the model and the best baseline, and the patients' count."""
    best = best_baseline(rows, region)
    return {
        "condition": _mean_psnr(rows, "condition", region),
        "model": _mean_psnr(rows, "model", region),
        "baseline": best,
        "baseline_db": _mean_psnr(rows, best, region),
        "patients": len({r["patient"] for r in rows}),
    }


def _patients(rows: list[dict]) -> list[str]:
    return sorted({r["patient"] for r in rows})


def _value(rows: list[dict], patient: str, method: str, region: str) -> dict | None:
    return next((r for r in rows if r["patient"] == patient and r["method"] == method and r["region"] == region), None)


def _regions(rows: list[dict]) -> list[str]:
    """The regions scored: the volume, and the lungs where a lung mask was found (a slab of a few slices, or a
    scan without aerated lung, has none)."""
    return [region for region in ("volume", "lungs") if any(r["region"] == region for r in rows)]


def results_table(rows: list[dict]) -> list[str]:
    """Per patient and region: input, model, best baseline, and the model's verdict against both."""
    lines = [
        "| patient | region | input PSNR | model PSNR / SSIM | best baseline PSNR / SSIM | model vs input | "
        "model vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for region in _regions(rows):
        best = best_baseline(rows, region)
        for patient in _patients(rows):
            model, base = _value(rows, patient, "model", region), _value(rows, patient, best, region)
            condition = _value(rows, patient, "condition", region)
            if model is None or base is None or condition is None:
                continue  # this patient has no such region (no lung mask)
            gain = model["psnr_slices_db"] - condition["psnr_slices_db"]
            margin = model["psnr_slices_db"] - base["psnr_slices_db"]
            lines.append(
                f"| {patient[:12]} | {region} | {condition['psnr_slices_db']:.2f} | "
                f"{model['psnr_slices_db']:.2f} / {model['ssim_slices']:.4f} | "
                f"{best} {base['psnr_slices_db']:.2f} / {base['ssim_slices']:.4f} | "
                f"{verdict(model['psnr_slices_db'], condition['psnr_slices_db'])} ({gain:+.2f} dB) | "
                f"{verdict(model['psnr_slices_db'], base['psnr_slices_db'])} ({margin:+.2f} dB) |"
            )
    return lines


def all_methods_table(rows: list[dict]) -> list[str]:
    patients = _patients(rows)
    lines = [
        "| region | method | " + " | ".join(f"{p[:12]} PSNR / SSIM" for p in patients) + " |",
        "|---|---|" + "---|" * len(patients),
    ]
    for region in _regions(rows):
        methods = ["model", "condition"] + sorted({r["method"] for r in rows} - {"model", "condition"})
        for method in methods:
            cells = []
            for patient in patients:
                row = _value(rows, patient, method, region)
                cells.append(f"{row['psnr_slices_db']:.2f} / {row['ssim_slices']:.4f}" if row else "-")
            lines.append(f"| {region} | {method} | " + " | ".join(cells) + " |")
    return lines


def extent(card: dict) -> str:
    """What the "volume" rows of a card's scores cover: the whole volume, or the central slices scored."""
    return f"central {card['slices']} slices" if card.get("slices") else "whole volume"


def standing(rows: list[dict], region: str = "volume", scored: str = "whole volume") -> str:
    """How often the model beats, ties with or loses to its input and the best baseline, per patient."""
    best = best_baseline(rows, region)
    parts = []
    for other in ("condition", best):
        counts = _tally(rows, other, region)
        label = "its input" if other == "condition" else f"the best classical baseline ({best})"
        parts.append(
            f"against {label} it wins on {counts['beats']}, ties on {counts['ties with']} and loses on "
            f"{counts['loses to']} of {len(_patients(rows))} held-out patients"
        )
    where = f"over the {scored}" if region == "volume" else "in the lungs"
    return f"{where.capitalize()}, " + "; ".join(parts) + "."


def _tally(rows: list[dict], other: str, region: str = "volume") -> dict:
    counts = {"beats": 0, "ties with": 0, "loses to": 0}
    for patient in _patients(rows):
        model, theirs = _value(rows, patient, "model", region), _value(rows, patient, other, region)
        if model is None or theirs is None:
            continue
        counts[verdict(model["psnr_slices_db"], theirs["psnr_slices_db"])] += 1
    return counts


README_HEADER = (
    "| model | task | input (dB) | model (dB) | best classical (dB) | model vs best: wins / ties / losses |\n"
    "|---|---|---|---|---|---|"
)


def readme_row(name: str, card: dict, rows: list[dict]) -> str:
    """The README's line for a shipped model: mean whole-volume PSNR of input, model and best baseline."""
    top = headline(rows)
    tally = _tally(rows, top["baseline"])
    return (
        f"| `pretrained:{name}` | {card['task']} | {top['condition']:.2f} | {top['model']:.2f} | "
        f"{top['baseline']} {top['baseline_db']:.2f} | "
        f"{tally['beats']} / {tally['ties with']} / {tally['loses to']} of {top['patients']} |"
    )


def milder_lines(rows: list[dict]) -> list[str]:
    """One line per (series, dose) row of a milder-condition check: model against input, and the verdict."""
    return [
        f"{r['series']} at dose {r['dose']:g}: model {r['model_db']:.2f} / input {r['input_db']:.2f} dB "
        f"({r['model_db'] - r['input_db']:+.2f}), SSIM {r['model_ssim']:.4f} / {r['input_ssim']:.4f}: "
        + ("not worse" if r["model_db"] >= r["input_db"] else "WORSE than its input")
        for r in rows
    ]


def _seen_lines(card: dict) -> list[str]:
    """The input domain's scanners, as read from the series' headers when the card was scored (none in a
    card written before they were recorded: its own words say it)."""
    lines = []
    if card["training"].get("scanners"):
        lines.append("Seen in training (from the series' headers): " + "; ".join(card["training"]["scanners"]) + ".")
    if card.get("heldout_scanners"):
        lines.append("Tested on the held-out patients' scanners: " + "; ".join(card["heldout_scanners"]) + ".")
    return lines


def _size_words(training: dict) -> str:
    """How the generator's size differs from its preset's (nothing where it does not, or is not recorded)."""
    from cgan_ct.config import model_config

    model = training.get("model")
    if not model:
        return ""
    preset = model_config(training["preset"])
    changes = []
    if model.get("base_filters", preset.base_filters) != preset.base_filters:
        changes.append(f"{model['base_filters']} first-level filters")
    if model.get("depth", preset.depth) != preset.depth:
        changes.append(f"U-Net depth {model['depth']}")
    return f" at {' and '.join(changes)}" if changes else ""


def _scale_lines(card: dict) -> list[str]:
    """The card's scale, from its facts: patients, scanners, parameters, steps and what it was scored on."""
    training = card["training"]
    if not training.get("scanners"):
        return []  # a card written before the facts were recorded says it in its own words
    parameters = int(str(training["parameters"]).replace(",", ""))
    return [
        f"Small scale: trained on {len(training['series'])} patients ({len(training['scanners'])} scanner and "
        f"kernel settings), a generator of {parameters / 1e6:.2f} M parameters, {training['steps']:,} steps "
        f"({training['minutes']:.0f} minutes on {training['cpu']}); scored on the {extent(card)} of "
        f"{len(card['heldout'])} held-out patients. The figures above are sanity checks on a handful of "
        "patients, not a validated benchmark."
    ]


def data_lines(series: list[str]) -> list[str]:
    """The training data table of a card: each series with its collection, licence and source."""
    lines = ["| series | collection | licence | source |", "|---|---|---|---|"]
    for name in series:
        collection, licence, address = source(name)
        lines.append(f"| {name} | {collection} | {licence} | {address} |")
    return lines


def protocol(slices: int) -> str:
    """The card's protocol line for this scoring."""
    scored = f"the central {slices} slices of each patient" if slices else "the whole volume"
    return (
        f"Slice-averaged PSNR (dB) and SSIM over {scored} and inside its lungs, HU clipped to [-1024, 3071], data "
        "range 4096 HU; the same simulated condition (seed 0) for the model and the baselines, whose strengths were "
        "tuned on training patients where recorded (baselines.TUNED); tiles overlap by 25 %."
    )


def updated_card(card: dict, record: dict, slices: int) -> dict:
    """card.json's facts brought up to date with a training ``record`` (train, steps, seed, train_minutes, cpu,
    heldout; where recorded: version, date, model, parameters, scanners, heldout_scanners: what the release scripts in
    experiments/ write) and its scoring on ``slices`` central slices (0: the whole volume); the card's words
    are kept."""
    card = json.loads(json.dumps(card))  # a copy
    training = card.setdefault("training", {})
    training.update(
        series=record["train"],
        steps=record["steps"],
        seed=record["seed"],
        minutes=round(record["train_minutes"], 1),
        cpu=record["cpu"],
    )
    if "version" in record:  # a retrained model
        card["version"], card["date"] = record["version"], record["date"]
    if "model" in record:
        training["model"] = record["model"]
    if "parameters" in record:
        training["parameters"] = f"{record['parameters']:,}"
    if "scanners" in record:
        training["scanners"] = record["scanners"]
    if "heldout_scanners" in record:
        card["heldout_scanners"] = record["heldout_scanners"]
    card["heldout"] = record["heldout"]
    card["protocol"], card["slices"] = protocol(slices), slices
    return card


def render_model_card(card: dict, rows: list[dict], has_figure: bool = False) -> str:
    """``MODEL_CARD.md`` of a shipped model from its ``card.json`` and ``scores.json`` (see module doc)."""
    name, task = card["name"], card["task"]
    top = headline(rows)
    spread = [r["z_std_hu"] for r in rows if r["method"] == "model" and r["region"] == "volume"]
    training = card["training"]
    lines = [
        f"# Model card: `pretrained:{name}`",
        "",
        f"Version {card['version']} ({card['date']}), exported with cgan-ct {card['cgan_ct_version']}. "
        f"A block generator for the **{task}** task: {card['condition']}. 32 x 32 x 32 blocks of "
        "Hounsfield units in, the same out; whole scans are tiled, predicted and stitched by `cgan-ct-infer`.",
        "",
        "## Intended use",
        "",
        *[f"- {line}" for line in card["intended_use"]],
        "- **Research only. Not a medical device: not for diagnosis, treatment or any clinical decision.**",
        "",
        "    " + "\n    ".join(card["commands"]),
        "",
        "## Input domain",
        "",
        *[f"- {line}" for line in card["input_domain"][:1]],
        *[f"- {line}" for line in _seen_lines(card)],
        *[f"- {line}" for line in card["input_domain"][1:]],
        "",
        "## Training data",
        "",
        f"{len(training['series'])} patients, one CT series each:",
        "",
        *data_lines(training["series"]),
        "",
        f"Held out, never converted nor seen in training, nothing chosen on them: {', '.join(card['heldout'])}.",
        "",
        "## Training",
        "",
        f"- The `{training['preset']}` preset{_size_words(training)}: {training['parameters']} generator parameters, "
        f"{training['steps']:,} steps of batch {training['batch']}, seed {training['seed']}, "
        f"{training['minutes']:.1f} minutes on {training['cpu']}.",
        f"- Reproduce: `{training['reproduce']}`.",
        "",
        "## Results on held-out real patients",
        "",
        f"{card['protocol']} Mean over the {top['patients']} patients ({extent(card)}): input "
        f"{top['condition']:.2f} dB, model {top['model']:.2f} dB, best classical baseline "
        f"({top['baseline']}) {top['baseline_db']:.2f} dB. A PSNR difference under 0.1 dB is a tie.",
        "",
        *results_table(rows),
        "",
        "Every method:",
        "",
        *all_methods_table(rows),
        "",
    ]
    if any(s == s for s in spread):  # measured (a scoring without the second draw records NaN)
        lines += [
            f"The output's per-voxel spread over two draws of the noise input: "
            f"{', '.join(f'{s:.2f}' for s in spread)} HU inside the body.",
            "",
        ]
    if card.get("milder"):
        lines += [
            "## Never worse than its input",
            "",
            "The same held-out slabs at milder conditions than the one above, the model against what it was "
            "given (whole slab, slice-averaged PSNR):",
            "",
            *[f"- {line}" for line in milder_lines(card["milder"])],
            "",
        ]
    if has_figure:
        lines += [
            "## Example",
            "",
            f"The middle slice of the central {EXAMPLE_SLICES} slices of the held-out series "
            f"{card['heldout'][0]}: condition, model, best baseline and original in the lung and soft-tissue "
            "windows, both errors on one scale; PSNR over the slice shown.",
            "",
            f"![condition, model, best baseline, original on a held-out patient]({EXAMPLE_FIGURE})",
            "",
        ]
    lines += [
        "## Limitations",
        "",
        *[f"- {line}" for line in _scale_lines(card)],
        *[f"- {line}" for line in card["limitations"]],
        *[f"- {standing(rows, region, extent(card))}" for region in _regions(rows)],
        "",
        "## Licence and attribution",
        "",
        f"- Weights: {card['weights_license']}. Code: Apache-2.0 (the repository's LICENSE).",
        "- The weights were learned from the series listed above: attribute their collections (and cite the "
        "papers) when you use or redistribute the model.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder) -> pathlib.Path:
    """Renders ``folder``'s card from its ``card.json`` and ``scores.json`` into ``MODEL_CARD.md``."""
    folder = pathlib.Path(folder)
    card, rows = load_card(folder)
    path = folder / MODEL_CARD_FILE
    path.write_text(render_model_card(card, rows, (folder / EXAMPLE_FIGURE).exists()))
    return path


def write_example_figure(folder, ct_path) -> pathlib.Path:
    """Draws ``example.jpg`` of the shipped model in ``folder`` on the central slices of the scan at ``ct_path``."""
    import dataclasses

    from cgan_ct.inference import figures
    from cgan_ct.inference.evaluation import evaluate_volume
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.io.volume_reader import read_volume

    folder = pathlib.Path(folder)
    volume = read_volume(ct_path)
    start = max(0, volume.shape[0] // 2 - EXAMPLE_SLICES // 2)
    slab = dataclasses.replace(volume, hu=volume.hu[start : start + EXAMPLE_SLICES])
    model = BlockModel(folder)
    figure = evaluate_volume(slab, model.info.task, model, noise_spread=False).figure
    body = figures.slice_body(figure.original)
    size = min(figures.CLOSEUP_PX, *figure.original.shape)
    box = (*figures.closeup_origin(figure.original, figure.model, figure.baseline, size, body), size)
    drawing = figures.draw_comparison(figure, scales_hu=figures.error_scales_hu(figure, body), box=box)
    path = folder / EXAMPLE_FIGURE
    drawing.savefig(path, dpi=EXAMPLE_DPI, pil_kwargs={"quality": 85})
    return path
