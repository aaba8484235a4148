"""Salted, keyed hashes that stand in for patient and series identifiers.

Identifiers such as PatientID are often short and guessable (hospital record
numbers), so a plain hash could be reversed by trying every number. A keyed
hash (HMAC-SHA256) with a secret salt cannot. The salt comes from the caller,
else from the environment variable ``CGAN_CT_SALT``, else a public default that
only suits data that is already de-identified.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SALT_ENV = "CGAN_CT_SALT"
DEFAULT_SALT = "cgan-ct-public-default-salt"
_DIGEST_HEX_CHARS = 16  # 64 bits: collision-free for any realistic archive


def resolve_salt(salt: str | None = None) -> str:
    """Returns the salt to use: the argument, else $CGAN_CT_SALT, else the default."""
    if salt:
        return salt
    return os.environ.get(SALT_ENV) or DEFAULT_SALT


def uses_default_salt(salt: str | None = None) -> bool:
    """Whether pseudonyms would be keyed by the public default (no salt given, $CGAN_CT_SALT unset)."""
    return resolve_salt(salt) == DEFAULT_SALT


DEFAULT_SALT_WARNING = (
    f"{SALT_ENV} is not set: pseudonyms are keyed by the public default, so anyone who can guess a patient "
    f"id can compute its pseudonym; set {SALT_ENV} to a secret of your own for real patients"
)


def pseudonym(kind: str, value: str, salt: str | None = None) -> str:
    """A stable pseudonymous id such as ``vol-3f2a...`` for ``value``.

    ``kind`` namespaces the hash (``"vol"``, ``"pat"``) so that equal strings of
    different kinds never share an id.
    """
    key = resolve_salt(salt).encode("utf-8")
    message = f"{kind}\x00{value}".encode()
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:_DIGEST_HEX_CHARS]}"
