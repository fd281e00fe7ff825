"""Optional encryption of private keys at rest, with Fernet (AES-128-CBC + HMAC-SHA256).

When ``SIGNWAVE_KEY_ENCRYPTION_KEY`` is set, the ``keys.private_key_pem``
column holds ``fernet:<token>`` instead of the PEM; rows written before
encryption was turned on stay readable as plaintext until
`signwave keys rotate-encryption` re-encrypts them. Pure: no I/O, and neither
the encryption key nor a decrypted key ever appears in a repr or a message.
"""

from __future__ import annotations

import binascii

from cryptography.fernet import Fernet, InvalidToken

from signwave.errors import ConfigError, KeyEncryptionError
from signwave.ids import KeyId

PREFIX = "fernet:"
VARIABLE = "SIGNWAVE_KEY_ENCRYPTION_KEY"


def new_key() -> str:
    """A fresh Fernet key (32 random bytes, URL-safe base64)."""
    return Fernet.generate_key().decode("ascii")


def check_key(value: str, *, variable: str = VARIABLE) -> str:
    """``value`` if it is a Fernet key; else a `ConfigError` that does not quote it."""
    _fernet(value, variable)
    return value


def _fernet(value: str, variable: str) -> Fernet:
    try:
        return Fernet(value.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise ConfigError(
            f"{variable} is not a Fernet key (44 characters of URL-safe base64): "
            "make one with `signwave keys generate-encryption-key`"
        ) from None


class KeyCipher:
    """Seals private keys for storage and opens them again; plaintext without a key."""

    def __init__(self, key: str = "", *, variable: str = VARIABLE) -> None:
        self._fernet = _fernet(key, variable) if key else None
        self._variable = variable

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, pem: bytes) -> str:
        if self._fernet is None:
            return pem.decode("ascii")
        return PREFIX + self._fernet.encrypt(pem).decode("ascii")

    def open(self, stored: str, *, key_id: KeyId) -> bytes:
        if not is_sealed(stored):
            return stored.encode()
        if self._fernet is None:
            raise KeyEncryptionError(
                f"private key {key_id} is stored encrypted: set {self._variable} "
                "to the key it was encrypted with"
            )
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise KeyEncryptionError(
                f"{self._variable} does not decrypt private key {key_id}: "
                "the keys were encrypted with another key (wrong key, or rotated since?)"
            ) from None

    def __repr__(self) -> str:
        return f"KeyCipher(encrypts={self.encrypts})"


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


PLAINTEXT = KeyCipher()
