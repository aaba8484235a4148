"""The one way a cgan-ct job runs: absl flags, a ``--help`` that describes the job, errors as one line.

Every console script (``cgan-ct-<job>``) and ``python -m pipelines.<job>`` ends in::

    def run() -> None:
        job.run(main, __name__, required=("dataset_dir", "output_dir"))

``main(argv)`` returns the exit status (None is 0). A ``VolumeError``, ``ValueError``
or ``OSError`` that escapes it (a bad input, a wrong value, a path that cannot be
written) becomes one line, ``cgan-ct-<job>: error: ...`` on stderr, and exit
status 2 (with ``CGAN_CT_TRACEBACK=1`` in the environment they keep their traceback:
a ValueError can also be a bug); anything else is a bug and keeps its traceback. Missing required
flags (or empty ones: ``--output_dir=``) and stray arguments are absl usage
errors (exit status 1).
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from cgan_ct.errors import VolumeError

INPUT_ERRORS = (VolumeError, ValueError, OSError)
INPUT_ERROR_STATUS = 2
TRACEBACK_ENV = "CGAN_CT_TRACEBACK"  # =1: input errors keep their traceback (a ValueError may be a bug)
_HELP_FLAGS = {"--help", "-help", "--helpshort", "-helpshort", "-?", "--?"}
_HELPFULL_FLAGS = {"--helpfull", "-helpfull"}


def job_name(module: str) -> str:
    """The command name: the first word of the job module's docstring (``cgan-ct-train: ...``)."""
    first_line = (sys.modules[module].__doc__ or "").strip().split("\n", 1)[0]
    name, colon, _ = first_line.partition(":")
    if colon and name.strip() and not any(c.isspace() for c in name.strip()):
        return name.strip()
    return pathlib.Path(sys.argv[0]).name if module == "__main__" else module


def help_text(module: str, full: bool = False) -> str:
    """The job's docstring and its own flags (``full``: every flag absl knows)."""
    doc = (sys.modules[module].__doc__ or "").strip("\n")
    key = sys.argv[0] if module == "__main__" else module  # absl files __main__'s flags under argv[0]
    if full:
        flag_help = flags.FLAGS.get_help().strip("\n")
    else:  # the job's own flags, without absl's "<module>:" heading (a file path under python -m)
        flag_help = "\n".join(
            line for line in flags.FLAGS.module_help(key).strip("\n").splitlines() if line != f"{key}:"
        )
    lines = [doc, ""]
    if flag_help:
        lines += ["flags:", flag_help, ""]
    if not full:
        lines.append("Try --helpfull to get a list of all flags.")
    return "\n".join(lines)


def _asked_for_help(argv: Sequence[str]) -> str | None:
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in _HELP_FLAGS:
            return "short"
        if arg in _HELPFULL_FLAGS:
            return "full"
    return None


def _given(value) -> bool:
    return value is None or value not in ("", [])  # None is mark_flags_as_required's to report


def _require(required: Sequence[str]) -> None:
    """Required flags must be given, and not as an empty value (``--output_dir=`` is no folder)."""
    if not required:
        return
    flags.mark_flags_as_required(list(required))
    for name in required:
        flags.register_validator(name, _given, message=f"--{name} must not be empty")


def run(
    main: Callable[[list[str]], int | None],
    module: str,
    required: Sequence[str] = (),
    positional: bool = False,
    argv: Sequence[str] | None = None,
) -> None:
    """Parses flags and runs ``main``; exits with its status. See the module docstring.

    Args:
      main: the job, ``argv -> exit status``; argv[0] is the program, the rest positional arguments.
      module: the job module's ``__name__`` (its docstring is the help; its flags are listed).
      required: flags that must be given.
      positional: whether the job takes positional arguments (else they are a usage error).
      argv: the command line (default ``sys.argv``).
    """
    argv = list(sys.argv if argv is None else argv)
    asked = _asked_for_help(argv)
    if asked:
        print(help_text(module, full=asked == "full"))
        sys.exit(0)
    _require(required)
    name = job_name(module)

    def guarded(args: list[str]) -> None:
        if len(args) > 1 and not positional:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        try:
            status = main(args)
        except INPUT_ERRORS as exc:
            if os.environ.get(TRACEBACK_ENV) == "1":
                raise  # a developer asking where a "bad input" really came from
            print(f"{name}: error: {exc}", file=sys.stderr)
            sys.exit(INPUT_ERROR_STATUS)
        sys.exit(status or 0)

    app.run(guarded, argv=argv)
