"""The project's one exception class for input a user can get wrong."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Input a user can get wrong: a scan, a dataset, a run folder, a model version, a reader's answers, a
    flag's value, that cannot be read, written or used as asked.

    The message always starts with the offending path (or value) so that a
    command-line tool can print it as one line. Until issue 32 it was called
    ``VolumeError``, which stays an alias (the same class) for code that catches it.
    """

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = None if source is None else os.fspath(source)
        self.problem = problem
        super().__init__(problem if self.source is None else f"{self.source}: {problem}")

    def __reduce__(self):
        # Pickled as its two parts: a conversion's worker processes send their errors back to the parent.
        return type(self), (self.source, self.problem)


VolumeError = InputError  # the old name (it was raised for far more than volumes); the same class
