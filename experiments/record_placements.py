"""Record the training volumes' placements in an already trained cascade (issue 33: synthetic volumes alike).

  python experiments/record_placements.py --cascade CASCADE --input SERIES,...

``cgan-ct-train-cascade`` records them when it trains (cascade.json's ``placements``: each training volume's
in-plane spacing and body offset on the cascade's plane, numbers only, sorted); this gives a cascade trained
before 2026-12-08 the same record, measured on ``--input`` (the cascade's training series,
centre-cropped or padded to its plane as the trainer takes them). Nothing else changes: cgan-ct-synthesize then
puts each volume on a grid drawn from them (cgan_ct.synthesis.placement). Work on a copy: CASCADE is changed
in place. A cascade that has placements already is refused.
"""

from __future__ import annotations

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

from absl import app, flags

_CASCADE = flags.DEFINE_string("cascade", None, "The cascade folder (changed in place).", required=True)
_INPUT = flags.DEFINE_list("input", None, "The cascade's training series (folders or volume files).", required=True)


def main(argv: list[str]) -> None:
    del argv
    import dataclasses
    import pathlib

    from cgan_ct.io.sources import discover
    from cgan_ct.synthesis.cascade_spec import CascadeSpec
    from cgan_ct.synthesis.cascade_training import fit_plane, placements_line
    from cgan_ct.synthesis.placement import measure

    folder = pathlib.Path(_CASCADE.value)
    spec = CascadeSpec.load(folder)
    if spec.placements:
        raise SystemExit(f"{folder}: it has placements already")
    sources, skipped = discover(_INPUT.value)
    if skipped:
        raise SystemExit("; ".join(f"{s.path}: {s.reason}" for s in skipped))
    placements = []
    for source in sources:
        volume = source.read(None)
        hu = fit_plane(volume.hu, spec.size)
        placement = measure(hu, volume.spacing_mm[1:])
        if placement is None:
            raise SystemExit(f"{source.volume_id}: no body (nothing above -500 HU) to place")
        placements.append(placement)
    placements.sort(key=lambda p: (p.spacing_mm, p.offset_mm))
    dataclasses.replace(spec, placements=[p.to_json() for p in placements]).save(folder)
    print(placements_line(placements))


if __name__ == "__main__":
    app.run(main)
