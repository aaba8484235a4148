"""Keyed hashes that stand in for patient and series identifiers, and the secret key they need.

Identifiers such as PatientID are often short and guessable (hospital record numbers): a plain hash,
or one keyed by a value written in public source code, is reversed by hashing every possible number
(all 8-digit numbers take minutes). So a pseudonym is an HMAC-SHA256 keyed by a secret of the user's:
the ``salt`` argument (the commands' ``--salt_file``), else ``$CGAN_CT_SALT``, else a random secret
made on first use and kept in the user's config folder (``$XDG_CONFIG_HOME/cgan-ct/salt``, by default
``~/.config/cgan-ct/salt``, readable by the user only). The same inputs get the same pseudonyms only
under the same secret: keep that file (back it up, copy it to the other machines) to keep them.

An empty key, or a key file that is empty, unreadable or open to other users, is a ``InputError``
naming the problem; the secret is never made anew over a bad file, since that would change every
pseudonym.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import os
import pathlib
import secrets
import stat
import tempfile
import warnings
from collections.abc import Callable

from cgan_ct.errors import InputError

SALT_ENV = "CGAN_CT_SALT"
SECRET_FILE = pathlib.Path("cgan-ct", "salt")  # under the user's config folder
_DIGEST_HEX_CHARS = 16  # 64 bits: collision-free for any realistic archive
_SECRET_BYTES = 32


class SecretCreatedWarning(UserWarning):
    """The user's secret key of the pseudonyms was made (once, on first use)."""


# Who hears that the secret was made: a Python warning, unless a command says it in its own words.
_on_created: contextvars.ContextVar[Callable[[pathlib.Path], None] | None] = contextvars.ContextVar(
    "cgan_ct_secret_created", default=None
)


def secret_path() -> pathlib.Path:
    """Where the user's secret is kept: ``$XDG_CONFIG_HOME/cgan-ct/salt``, else ``~/.config/cgan-ct/salt``."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = pathlib.Path(config) if os.path.isabs(config) else pathlib.Path.home() / ".config"
    return base / SECRET_FILE


def secret_created_notice(path: pathlib.Path) -> str:
    """The one line that tells the user a secret was made for them, and what it means."""
    return (
        f"made a secret key for the pseudonyms in {path} (readable by you only); scans get the same "
        f"pseudonyms across runs and machines only with this file (back it up) or the same {SALT_ENV}"
    )


@contextlib.contextmanager
def on_secret_created(callback: Callable[[pathlib.Path], None]):
    """While the block runs, ``callback(path)`` is told when the user's secret is made (not a warning)."""
    token = _on_created.set(callback)
    try:
        yield
    finally:
        _on_created.reset(token)


def read_salt_file(path: str | os.PathLike) -> str:
    """The key held in ``path`` (surrounding whitespace, such as the final newline, ignored).

    Raises:
      InputError: the file is missing, unreadable, empty, or open to other users (any group or
        other permission bit: the key is a password).
    """
    path = pathlib.Path(path)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise InputError(path, "the pseudonym key file is not a regular file")
        if os.name == "posix" and mode & 0o077:
            raise InputError(
                path, f"the pseudonym key file is open to other users (mode {mode & 0o777:04o}); chmod 600 {path}"
            )
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(path, "the pseudonym key file does not exist") from None
    except UnicodeDecodeError:
        raise InputError(path, "the pseudonym key file is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, f"the pseudonym key file cannot be read ({exc.strerror or exc})") from None
    if not key:
        raise InputError(path, "the pseudonym key file is empty; write a long secret into it")
    return key


def _create_secret(path: pathlib.Path) -> bool:
    """Writes a new random secret to ``path`` unless one is there; whether this call made it.

    The secret is written to a private temporary file and linked into place, so the file appears whole
    or not at all, and of two processes making it at once, one wins and both use its secret."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".salt-", dir=path.parent)  # mode 0600
    except OSError as exc:
        raise InputError(
            path, f"cannot make the pseudonym secret ({exc.strerror or exc}); set {SALT_ENV} instead"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_hex(_SECRET_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(tmp, path)  # never replaces: an existing secret is kept
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise InputError(
            path, f"cannot write the pseudonym secret ({exc.strerror or exc}); set {SALT_ENV} instead"
        ) from None
    finally:
        os.unlink(tmp)


def user_secret() -> str:
    """The user's own secret (see the module docstring), made on first use.

    The first call that makes it tells the ``on_secret_created`` callback, else warns once
    (``SecretCreatedWarning``); later calls read it silently."""
    path = secret_path()
    if not os.path.lexists(path) and _create_secret(path):
        callback = _on_created.get()
        if callback is not None:
            callback(path)
        else:
            warnings.warn(secret_created_notice(path), SecretCreatedWarning, stacklevel=2)
    return read_salt_file(path)


def resolve_salt(salt: str | None = None) -> str:
    """The key of the pseudonyms: ``salt``, else ``$CGAN_CT_SALT``, else the user's secret.

    Raises:
      InputError: ``salt`` or ``$CGAN_CT_SALT`` is given but empty, or the user's secret is unusable.
    """
    if salt is not None:
        if not salt.strip():
            raise InputError(None, "the pseudonym key is empty; give a secret of your own")
        return salt
    if SALT_ENV in os.environ:
        if not os.environ[SALT_ENV].strip():
            raise InputError(
                None, f"{SALT_ENV} is set but empty; set it to a secret of your own, or unset it to use {secret_path()}"
            )
        return os.environ[SALT_ENV]
    return user_secret()


def pseudonym(kind: str, value: str, salt: str | None = None) -> str:
    """A stable pseudonymous id such as ``vol-3f2a...`` for ``value``, keyed by ``resolve_salt(salt)``.

    ``kind`` namespaces the hash (``"vol"``, ``"pat"``) so that equal strings of
    different kinds never share an id.
    """
    key = resolve_salt(salt).encode("utf-8")
    message = f"{kind}\x00{value}".encode()
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:_DIGEST_HEX_CHARS]}"
