"""Every command the README and docs/ show exists, with every flag they give it.

Reads the ``bash`` code blocks of README.md and docs/*.md and their inline code spans, finds each
``cgan-ct-*`` command (continuation lines joined, comments dropped), and checks its flags against
what the command's own ``--helpfull`` lists; ``make`` targets against the Makefile, ``pip install``
extras against setup.py, ``python -m`` modules against the tree.
"""

from __future__ import annotations

import functools
import pathlib
import re
import shlex
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import setup_jobs

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BIN = pathlib.Path(sysconfig.get_path("scripts"))
_STOP = {"|", "||", "&&", ";", "--", ">", "<", "&"}  # after a bare --, Beam's own pipeline flags follow


def _shell_lines(text: str) -> list[str]:
    """Command lines of the ```bash blocks (continuations joined) and of `inline` code spans."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line for line in joined.splitlines() if line.strip()]
    lines += [span for span in re.findall(r"`([^`\n]+)`", text) if span.startswith(("cgan-ct-", "make "))]
    return lines


def _words(line: str) -> list[str]:
    line = re.sub(r"(^|\s)#.*$", "", line)  # a comment (a # inside a word is kept)
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        return line.split()


def _invocations(pattern) -> list[tuple[str, str, list[str]]]:
    """(page, command, its words) for each word matching ``pattern`` in every page."""
    found = []
    for page in PAGES:
        for line in _shell_lines(page.read_text()):
            words = _words(line)
            for i, word in enumerate(words):
                name = word.rsplit("/", 1)[-1]
                if pattern.fullmatch(name):
                    args = []
                    for arg in words[i + 1 :]:
                        if arg in _STOP:
                            break
                        args.append(arg)
                    found.append((page.name, name, args))
    return found


CGAN_CT = re.compile(r"cgan-ct-[a-z-]+")
INVOCATIONS = _invocations(CGAN_CT)


def _jobs() -> dict[str, str]:
    return {f"cgan-ct-{job}": module for job, module in setup_jobs().items()}


@functools.cache
def _flags(command: str) -> frozenset[str]:
    """Every flag name ``command --helpfull`` lists; booleans also as ``no<name>``."""
    exe = _BIN / command
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", _jobs()[command]]
    out = subprocess.run([*argv, "--helpfull"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, f"{command} --helpfull failed: {out.stderr[-500:]}"
    names = set()
    for negatable, name in re.findall(r"^\s+--(\[no\])?([A-Za-z0-9_]+):", out.stdout, re.M):
        names.add(name)
        if negatable:
            names.add(f"no{name}")
    return frozenset(names | {"help", "helpfull", "helpshort", "version"})


def test_the_pages_show_commands():
    shown = {command for _, command, _ in INVOCATIONS}
    assert len(shown) >= 10, f"too few commands found in README.md and docs/: {sorted(shown)}"


def test_every_shown_command_is_installed_by_setup_py():
    jobs = _jobs()
    unknown = sorted({(page, command) for page, command, _ in INVOCATIONS if command not in jobs})
    assert not unknown, f"commands shown but not defined in setup.py: {unknown}"


def test_every_job_is_shown_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [command for command in _jobs() if f"`{command}`" not in readme]
    assert not missing, f"commands missing from the README's table: {missing}"


@pytest.mark.parametrize("command", sorted({command for _, command, _ in INVOCATIONS}))
def test_every_flag_shown_exists(command):
    known = _flags(command)
    bad = []
    for page, name, args in INVOCATIONS:
        if name != command:
            continue
        for arg in args:
            match = re.fullmatch(r"--([A-Za-z0-9_]+)(=.*)?", arg)
            if match and match.group(1) not in known:
                bad.append(f"{page}: {command} {arg}")
    assert not bad, f"flags shown that {command} does not have: {sorted(set(bad))}"


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    shown = {args[0] for _, _, args in _invocations(re.compile("make")) if args and not args[0].startswith("-")}
    assert shown, "no make command found"
    assert shown <= targets, f"make targets shown that the Makefile lacks: {sorted(shown - targets)}"


def test_every_extra_and_module_shown_exists():
    setup = (ROOT / "setup.py").read_text()
    extras = set(re.findall(r'^\s+"([a-z0-9]+)": \[', setup[setup.index("extras_require") :], re.M))
    for page in PAGES:
        text = page.read_text()
        for extra in re.findall(r"\.\[([a-z0-9,-]+)\]", text):
            for name in extra.split(","):
                assert name in extras, f"{page.name}: extra [{name}] is not in setup.py"
        for module in re.findall(r"python -m ((?:pipelines|tfrecords_tools)\.[a-z_]+)", text):
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{page.name}: no module {module}"


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
