"""Encryption of private keys at rest (Fernet), and secrets kept out of reprs and messages."""

from __future__ import annotations

import pytest

from signwave.errors import ConfigError, KeyEncryptionError
from signwave.ids import KeyId
from signwave.keycrypt import PLAINTEXT, KeyCipher, check_key, is_sealed, new_key
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from tests.pemfiles import pem_body, slices


@pytest.fixture(scope="module")
def pem(key_pool: list[KeyMaterial]) -> bytes:
    return key_pool[0].private_key_pem


def test_sealed_keys_are_not_pem_and_open_again(pem: bytes) -> None:
    cipher = KeyCipher(new_key())

    sealed = cipher.seal(pem)

    assert is_sealed(sealed) and sealed.startswith("fernet:")
    assert "PRIVATE KEY" not in sealed
    assert not any(s in sealed for s in slices(pem_body(pem), 16))
    assert cipher.open(sealed, key_id=KeyId(1)) == pem


def test_without_a_key_keys_stay_plaintext(pem: bytes) -> None:
    assert PLAINTEXT.seal(pem) == pem.decode()
    assert PLAINTEXT.open(pem.decode(), key_id=KeyId(1)) == pem


def test_plaintext_rows_stay_readable_once_encryption_is_on(pem: bytes) -> None:
    assert KeyCipher(new_key()).open(pem.decode(), key_id=KeyId(1)) == pem


def test_a_wrong_key_is_a_clear_error(pem: bytes) -> None:
    sealed = KeyCipher(new_key()).seal(pem)

    with pytest.raises(KeyEncryptionError) as caught:
        KeyCipher(new_key()).open(sealed, key_id=KeyId(7))

    assert caught.value.message == (
        "SIGNWAVE_KEY_ENCRYPTION_KEY does not decrypt private key 7: the keys were "
        "encrypted with another key (wrong key, or rotated since?)"
    )


def test_an_encrypted_key_without_an_encryption_key_is_a_clear_error(pem: bytes) -> None:
    sealed = KeyCipher(new_key()).seal(pem)

    with pytest.raises(KeyEncryptionError, match="key 3 is stored encrypted: set SIGNWAVE_KEY"):
        PLAINTEXT.open(sealed, key_id=KeyId(3))


def test_a_damaged_token_is_refused(pem: bytes) -> None:
    key = new_key()
    sealed = KeyCipher(key).seal(pem)
    damaged = sealed[:-10] + ("A" if sealed[-10] != "A" else "B") + sealed[-9:]

    with pytest.raises(KeyEncryptionError):
        KeyCipher(key).open(damaged, key_id=KeyId(1))


@pytest.mark.parametrize(
    "value", ["abc", "x" * 44, "secret-passphrase-that-is-not-fernet", "é" * 44]
)
def test_a_bad_encryption_key_is_refused_without_being_quoted(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_key(value)
    assert value not in caught.value.message
    assert "generate-encryption-key" in caught.value.message

    with pytest.raises(ConfigError):
        Settings(key_encryption_key=value)


def test_secrets_never_show_in_reprs() -> None:
    key = new_key()
    settings = Settings(key_encryption_key=key, flower_basic_auth="admin:hunter2")

    shown = f"{settings!r} {KeyCipher(key)!r}"

    assert key not in shown
    assert "hunter2" not in shown
    assert settings.to_env()["SIGNWAVE_KEY_ENCRYPTION_KEY"] == key, "workers still get it"


@pytest.mark.parametrize("value", ["admin", "admin:", ":pw", "a:b,c"])
def test_bad_flower_credentials_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="user:password"):
        Settings(flower_basic_auth=value)


def test_good_flower_credentials_are_accepted() -> None:
    assert Settings(flower_basic_auth="a:b:c,d:e").flower_basic_auth == "a:b:c,d:e"
