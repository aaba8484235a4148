"""How a room (subpackage) names its exports without importing them all.

``from cgan_ct.model import export_generator`` imports ``cgan_ct.model.export``
and nothing else of the room: importing a package's ``__init__`` never pulls in
its heavier or training-only modules (serving a model must not import the
training code; reading a DICOM series must not import TensorFlow).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to its module in the package."""

    def __getattr__(name: str):  # noqa: N807 (the module-level hook of PEP 562)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # once imported, a plain attribute
        return value

    def __dir__() -> list:  # noqa: N807
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
