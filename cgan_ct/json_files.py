"""JSON files that appear complete or not at all (manifests, receipts, run and demo state)."""

from __future__ import annotations

import json
import os
import pathlib


def write_json_atomic(path, data) -> pathlib.Path:
    """Writes ``data`` as JSON to a hidden temporary file beside ``path``, then renames it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path
