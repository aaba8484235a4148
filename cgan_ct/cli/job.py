"""The one way a cgan-ct job runs: absl flags, a ``--help`` that describes the job, errors as one line.

Every console script (``cgan-ct-<job>``) and ``python -m pipelines.<job>`` ends in::

    def run() -> None:
        job.run(main, __name__, required=("dataset_dir", "output_dir"))

``main(argv)`` returns the exit status (None is 0). A ``InputError``, ``ValueError``
or ``OSError`` that escapes it (a bad input, a wrong value, a path that cannot be
written) becomes one line, ``cgan-ct-<job>: error: ...`` on stderr, and exit
status 2 (with ``CGAN_CT_TRACEBACK=1`` in the environment they keep their traceback:
a ValueError can also be a bug); anything else is a bug and keeps its traceback. Missing required
flags (or empty ones: ``--output_dir=``) and stray arguments are absl usage
errors (exit status 1).

``--help`` and ``--version`` (``cgan-ct-<job> 0.1.0``) answer before anything heavy is imported: a job
module defines its flags with light imports only and imports the library's TensorFlow side inside
``main``. TensorFlow's own C++ log lines are hidden (``cgan_ct.runtime``), and so are the INFO lines
its Python side logs ("Using MirroredStrategy ...", "Writing fingerprint to ..."; under absl a
program shows INFO by default) through the ``tensorflow``, ``absl`` and ``jax`` loggers; their
warnings stay. ``TF_CPP_MIN_LOG_LEVEL=0`` gets all of them back; with absl's ``--logger_levels``
(e.g. ``--logger_levels=tensorflow:INFO``) the Python loggers are left to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from cgan_ct.errors import InputError
from cgan_ct.io.pseudonym import on_secret_created, read_salt_file, resolve_salt, secret_created_notice
from cgan_ct.runtime import native_log_level, quiet_tensorflow_import, uninstall_quiet_import
from cgan_ct.version import __version__

INPUT_ERRORS = (InputError, ValueError, OSError)
INPUT_ERROR_STATUS = 2
TRACEBACK_ENV = "CGAN_CT_TRACEBACK"  # =1: input errors keep their traceback (a ValueError may be a bug)
_HELP_FLAGS = {"--help", "-help", "--helpshort", "-helpshort", "-?", "--?"}
_HELPFULL_FLAGS = {"--helpfull", "-helpfull"}
_VERSION_FLAGS = {"--version", "-version"}
# Python loggers of the libraries a job runs on (TensorFlow's SavedModel code logs through absl's); no
# module of cgan-ct logs through any of them.
_LIBRARY_LOGGERS = ("tensorflow", "jax", "absl")


def define_batch():
    """``--batch`` of the jobs that send blocks to a generator (infer, synthesize): capped as serving caps it."""
    from cgan_ct.constants import MAX_SERVING_BATCH

    return flags.DEFINE_integer(
        "batch",
        16,
        f"Blocks per prediction call (at most {MAX_SERVING_BATCH}).",
        lower_bound=1,
        upper_bound=MAX_SERVING_BATCH,
    )


def define_inference_precision():
    """``--precision`` of the jobs that run a generator over scans (infer, evaluate)."""
    from cgan_ct.config import PRECISIONS

    return flags.DEFINE_enum(
        "precision",
        "auto",
        list(PRECISIONS),
        "What the generator computes in (the HU stay float32). auto: float32 today, because bfloat16 "
        "inference missed its goal against float32 (0.3-1.5 HU apart on average, up to 38 HU in a few voxels of "
        "the body: BUILD_NOTES.md); bfloat16: faster on CPUs with AMX-BF16 and on recent GPUs.",
    )


def error_line(exc: BaseException) -> str:
    """``exc`` as one line: an OSError as ``path: reason`` (not ``[Errno 28] ...``), any message's lines joined
    (pydicom and ITK write messages over several)."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
        if exc.filename2 is not None:
            text += f" (to {exc.filename2})"
    return " ".join(text.split())


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


def asked_for_version(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> bool:
    """A bare ``--version``. A job with a flag of that name (cgan-ct-export's ``--version N``) keeps its
    flag where a value follows it."""
    own_flag = "version" in flag_values
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        if arg in _VERSION_FLAGS:
            following = argv[i + 1] if i + 1 < len(argv) else None
            if not own_flag or following is None or following.startswith("-"):
                return True
    return False


class LibraryInfoFilter(logging.Filter):
    """Lets a record through unless it is an INFO (or DEBUG) record of a library's logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] not in _LIBRARY_LOGGERS


@contextlib.contextmanager
def library_info_hidden(level: int | None = None):
    """The libraries' INFO records kept off absl's handler (stderr) while the block runs, where TensorFlow's
    C++ INFO is hidden (``level``: ``TF_CPP_MIN_LOG_LEVEL``, default the one in force) and the user gave no
    ``--logger_levels``. A filter on the handler, not logger levels: TensorFlow resets those
    (``absl.logging.set_verbosity`` while it saves a model)."""
    level = native_log_level() if level is None else level
    asked = "logger_levels" in flags.FLAGS and flags.FLAGS["logger_levels"].present
    handler = absl_logging.get_absl_handler()
    hide = LibraryInfoFilter() if level >= 1 and not asked else None
    if hide:
        handler.addFilter(hide)
    try:
        yield
    finally:
        if hide:
            handler.removeFilter(hide)


def _given(value) -> bool:
    return value is None or value not in ("", [])  # None is mark_flags_as_required's to report


def _require(required: Sequence[str]) -> None:
    """Required flags must be given, and not as an empty value (``--output_dir=`` is no folder)."""
    if not required:
        return
    flags.mark_flags_as_required(list(required))
    for name in required:
        flags.register_validator(name, _given, message=f"--{name} must not be empty")


def define_salt_file():
    """``--salt_file`` of the jobs that name patients' scans by pseudonym (a key on the command line
    would show in ``ps`` and the shell's history)."""
    return flags.DEFINE_string(
        "salt_file",
        None,
        "File holding the secret key of the pseudonyms (mode 600). Default: $CGAN_CT_SALT, else the "
        "secret made for you on first use in ~/.config/cgan-ct/salt (README, Privacy).",
    )


def salt_from_flags() -> str | None:
    """The key in the job's ``--salt_file`` where it has that flag and it is given; else None (the library
    then takes ``$CGAN_CT_SALT``, else the user's secret)."""
    path = flags.FLAGS["salt_file"].value if "salt_file" in flags.FLAGS else None
    if path == "":
        raise InputError(None, "--salt_file is empty; give the file that holds the key")
    return None if path is None else read_salt_file(path)


def _say_secret_created(name: str):
    return lambda path: print(f"{name}: {secret_created_notice(path)}", file=sys.stderr, flush=True)


def check_pseudonym_key(name: str) -> None:
    """Before a job that names patients by pseudonym starts its work: its key is usable (a refused
    ``--salt_file`` or an empty ``$CGAN_CT_SALT`` is one error line now, not after a long read), and the
    user's secret, where it is the key, exists (made now the first time, with one notice line)."""
    with on_secret_created(_say_secret_created(name)):
        resolve_salt(salt_from_flags())


def run(
    main: Callable[[list[str]], int | None],
    module: str,
    required: Sequence[str] = (),
    positional: bool = False,
    argv: Sequence[str] | None = None,
    patients: bool = False,
) -> None:
    """Parses flags and runs ``main``; exits with its status. See the module docstring.

    Args:
      main: the job, ``argv -> exit status``; argv[0] is the program, the rest positional arguments.
      module: the job module's ``__name__`` (its docstring is the help; its flags are listed).
      required: flags that must be given.
      positional: whether the job takes positional arguments (else they are a usage error).
      argv: the command line (default ``sys.argv``).
      patients: whether the job reads patients' scans and names them by pseudonym: then their key is
        checked before ``main`` (``check_pseudonym_key``).
    """
    argv = list(sys.argv if argv is None else argv)
    asked = _asked_for_help(argv)
    if asked:
        print(help_text(module, full=asked == "full"))
        sys.exit(0)
    name = job_name(module)
    if asked_for_version(argv):
        print(f"{name} {__version__}")
        sys.exit(0)
    _require(required)
    quiet_tensorflow_import()  # main imports TensorFlow (if it does): its load-time lines are filtered

    def guarded(args: list[str]) -> None:
        if len(args) > 1 and not positional:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        try:
            if patients:
                check_pseudonym_key(name)
            with library_info_hidden(), on_secret_created(_say_secret_created(name)):
                status = main(args)
        except INPUT_ERRORS as exc:
            if os.environ.get(TRACEBACK_ENV) == "1":
                raise  # a developer asking where a "bad input" really came from
            print(f"{name}: error: {error_line(exc)}", file=sys.stderr)
            sys.exit(INPUT_ERROR_STATUS)
        sys.exit(status or 0)

    try:
        app.run(guarded, argv=argv)
    finally:
        uninstall_quiet_import()  # the filter belongs to this run (a test may call run in its own process)
