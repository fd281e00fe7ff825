"""The one exception hierarchy of signwave.

A `SignwaveError` carries a one-line message meant for the user; the CLI prints
it as is and exits non-zero. Retryable conditions have their own types so that
tasks can tell "try again later" from "this will never work".
"""

from __future__ import annotations


class SignwaveError(Exception):
    """signwave failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(SignwaveError):
    """invalid configuration."""


class DatabaseNotInitialised(SignwaveError):
    """the database has no signwave schema: run `signwave db init` first."""


class DatabaseUnavailable(SignwaveError):
    """cannot reach the database."""


class RedisUnavailable(SignwaveError):
    """cannot reach Redis."""


class RedisTLSError(SignwaveError):
    """Redis answered, but not over a TLS connection that could be trusted."""


class InputError(SignwaveError):
    """invalid input."""


class KeyImportError(InputError):
    """cannot import the key."""


class RecordImportError(InputError):
    """cannot import the records."""


class KeyEncryptionError(SignwaveError):
    """a stored private key cannot be decrypted."""


class RunInProgress(SignwaveError):
    """a signing run is in progress."""


class Retryable(SignwaveError):
    """a transient condition: try again later."""


class NoKeyAvailable(Retryable):
    """no signing key is free right now."""


class LeaseLost(SignwaveError):
    """the key lease is no longer held: stop signing, store nothing."""


class VerificationFailed(SignwaveError):
    """verification failed."""
