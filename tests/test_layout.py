"""The house as drawn: rooms import only what their ``MAY_IMPORT`` allows, serving never reaches training,
the jobs stay out of the library and of each other, and the old module paths still import."""

from __future__ import annotations

import ast
import functools
import importlib
import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cgan_ct"
ROOMS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
# Modules at the top of the package that every room may import; they import none of the rooms.
TOP = {"config", "constants", "errors", "version", "runtime", "lazy_exports", "tasks"}
# Serving a model or a cascade must not import the training code (a server has no dataset, and should not need one).
SERVING = ["cgan_ct.model.export", "cgan_ct.synthesis.synthesis", "cgan_ct.synthesis.coarse_export"]
TRAINING = {
    "cgan_ct.model.training",
    "cgan_ct.model.gan",
    "cgan_ct.data.input_pipeline",
    "cgan_ct.synthesis.coarse_training",
    "cgan_ct.synthesis.cascade_training",
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


@functools.cache
def _lazy_exports(package: str) -> dict[str, str]:
    """A room's ``_EXPORTS`` (public name -> defining module, imported on first use), read from its text."""
    path = MODULES.get(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return {name: f"{package}.{module}" for name, module in ast.literal_eval(node.value).items()}
    return {}


def _imports(path: pathlib.Path, source: str | None = None) -> set[str]:
    """Every cgan_ct module ``path`` imports, anywhere in the file (function-level imports count). A name taken
    from a room's lazy exports (``from cgan_ct.model import train``) counts as an import of the module that
    defines it (``cgan_ct.model.training``), which is what loads when the name is used."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cgan_ct"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cgan_ct":
            lazy = _lazy_exports(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else lazy.get(alias.name, node.module))
    return found


def test_a_name_from_a_rooms_lazy_exports_counts_as_its_defining_module():
    """The hole issue 32 found: ``from cgan_ct.model import train`` in a serving module passed the walk."""
    found = _imports(PACKAGE / "inference" / "probe.py", "from cgan_ct.model import train, export\n")
    assert found == {"cgan_ct.model.training", "cgan_ct.model.export"}
    assert _closure(*found) & TRAINING  # so the serving walk below would flag it


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def _declared(room: str) -> tuple[str, ...]:
    tree = ast.parse((PACKAGE / room / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MAY_IMPORT" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"cgan_ct/{room}/__init__.py declares no MAY_IMPORT")


def test_every_room_declares_what_it_may_import_and_documents_itself():
    assert set(ROOMS) >= {"io", "ops", "data", "model", "inference", "synthesis", "realism", "study", "demo", "cli"}
    # judging synthetic CT needs scans in HU only, never the generators it judges (issue 32)
    assert set(_declared("realism")) == {"ops", "io"}
    for room in ROOMS:
        declared = _declared(room)
        assert set(declared) <= set(ROOMS) - {room, "cli"}, (room, declared)
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 20, f"cgan_ct/{room}/__init__.py needs a docstring saying what it is for"


def test_imports_follow_the_declared_direction():
    allowed = {room: set(_declared(room)) | {room} for room in ROOMS}
    problems = []
    for module, path in MODULES.items():
        room = _room(module)
        for target in sorted(_imports(path)):
            if module == "cgan_ct" or module == "cgan_ct.moved":
                continue  # the public API and the old-path aliases may name anything
            if target == "cgan_ct":
                problems.append(f"{module} imports the package's __init__ (an import running back up)")
                continue
            target_room = _room(target)
            if target_room is None:
                if target.split(".")[1] not in TOP:
                    problems.append(f"{module} imports {target}, not a top-level module every room may use")
            elif room is None:
                problems.append(f"{module} (top level) imports {target} of room {target_room}")
            elif target_room not in allowed[room]:
                problems.append(f"{module} (room {room}) imports {target}; {room} may import {sorted(allowed[room])}")
    assert not problems, "\n".join(problems)


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of the package it imports (a room's ``__init__`` counts only where imported as such)."""
    return {module: {t for t in _imports(path) if t in MODULES and t != module} for module, path in MODULES.items()}


def test_no_import_cycle_between_modules():
    graph, state, cycles = _import_graph(), {}, []

    def visit(module: str, stack: list[str]) -> None:  # depth-first; a grey module met again closes a cycle
        state[module] = "grey"
        for target in sorted(graph[module]):
            if state.get(target) == "grey":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "black"

    for module in sorted(graph):
        if module not in state and module not in ("cgan_ct", "cgan_ct.moved"):
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def _project_files() -> list[pathlib.Path]:
    folders = ("cgan_ct", "pipelines", "tfrecords_tools", "benchmarks", "experiments", "tests")
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def test_no_module_is_imported_under_two_names():
    """The project's own code imports every module by its real path, never an old one that ``moved.py`` keeps."""
    from cgan_ct.moved import MOVED

    old_paths = {f"cgan_ct.{old}" for old, new in MOVED.items() if old != new}
    here = pathlib.Path(__file__).resolve()
    problems = []
    for path in _project_files():
        if path == here or path == PACKAGE / "moved.py":
            continue  # this file imports the old paths on purpose, to check that they still work
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            problems += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n in old_paths]
    assert not problems, "\n".join(problems)


def _top_level_names(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(names a module defines, names it only imports), at its top level (inside ``if`` / ``try`` too)."""
    defined, imported = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imported |= {a.asname or a.name.split(".")[0] for a in node.names}
    return defined, imported - defined


def test_no_test_module_imports_another():
    """Shared fixtures live in conftest.py and shared helpers in helper modules (dicom_factory, volume_factory,
    reader_helpers): importing a test module runs its module-level fixtures' definitions again (issue 32)."""
    problems = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            problems += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.startswith("tests.test_")]
    assert not problems, "\n".join(problems)


def test_every_name_is_imported_from_the_module_that_defines_it():
    """``from cgan_ct.ops.corruption import DENOISE`` works (corruption imports it) but gives the constant a
    second home: each name is taken from its own module (a room's lazy exports and the package's public API
    are homes by design)."""
    homes = {m: _top_level_names(p) for m, p in MODULES.items() if p.name != "__init__.py"}
    problems = []
    for path in _project_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in homes:
                only_imported = homes[node.module][1]
                problems += [
                    f"{path.relative_to(ROOT)}:{node.lineno} takes {a.name} from {node.module}, which only imports it"
                    for a in node.names
                    if a.name in only_imported and f"{node.module}.{a.name}" not in MODULES
                ]
    assert not problems, "\n".join(problems)


def _closure(*starts: str) -> set[str]:
    seen, todo = set(), sorted(starts)
    while todo:
        module = todo.pop()
        if module in seen or module not in MODULES:
            continue
        seen.add(module)
        todo += sorted(_imports(MODULES[module]))
    return seen


def test_serving_code_never_imports_training():
    serving = SERVING + sorted(m for m in MODULES if _room(m) == "inference")
    for module in serving:
        reached = _closure(module) & TRAINING
        assert not reached, f"{module} imports training code: {sorted(reached)}"


def test_serving_does_not_load_training_modules_at_run_time():
    """The lazy room exports keep it true when the modules run, not only in their text."""
    import subprocess
    import sys

    probe = (
        "import sys, cgan_ct.model.export, cgan_ct.inference.inference, cgan_ct.synthesis.synthesis\n"
        f"print(sorted(m for m in sys.modules if m in {sorted(TRAINING)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_jobs_use_the_library_and_not_each_other():
    for folder, other in (("pipelines", "tfrecords_tools"), ("tfrecords_tools", "pipelines")):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert top not in (folder, other) or path.name == "__init__.py", f"{path} imports {name}"
    for module, path in MODULES.items():
        assert not {t for t in _imports(path) if t.split(".")[0] in ("pipelines", "tfrecords_tools")}, module


@pytest.mark.parametrize("room", ROOMS)
def test_room_exports_resolve(room):
    package = importlib.import_module(f"cgan_ct.{room}")
    for name in package.__all__:
        assert getattr(package, name) is not None, f"cgan_ct.{room}.{name}"


def test_old_module_paths_still_import_and_warn():
    from cgan_ct.moved import MOVED, REMOVED_IN

    assert f"Old module paths are removed in cgan-ct {REMOVED_IN}" in (ROOT / "CHANGELOG.md").read_text()
    for old, new in MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"cgan_ct.{old}")
        assert module is importlib.import_module(f"cgan_ct.{new}"), old
        if new != old:
            message = next(str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))
            assert new in message and REMOVED_IN in message, (old, message)
    from cgan_ct.input_pipeline import PipelineOptions, make_dataset  # the README's example before the move

    from cgan_ct.data import input_pipeline

    assert make_dataset is input_pipeline.make_dataset and PipelineOptions is input_pipeline.PipelineOptions


def test_every_config_kind_has_the_same_presets():
    from cgan_ct import config

    assert set(config.CONVERSION_PRESETS) == set(config.MODEL_PRESETS) == set(config.COARSE_PRESETS)
    assert set(config.PRESETS) == set(config.MODEL_PRESETS)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        config.model_config("huge")
