"""RSA-PSS signing (SPEC §4), fingerprints and the repr of key material."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from signwave import signing
from signwave.signing import KeyMaterial


def _pss(salt_length: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length)


@pytest.fixture(scope="module")
def material(key_pool: list[KeyMaterial]) -> KeyMaterial:
    return key_pool[0]


def test_signature_round_trip_and_tampering(material: KeyMaterial) -> None:
    private = signing.load_private_key(material.private_key_pem)
    public = signing.load_public_key(material.public_key_pem)
    payload = b"\x00record payload\xff"

    sig = signing.sign(private, payload)

    assert signing.verify(public, payload, sig)
    assert not signing.verify(public, payload + b"x", sig)
    assert not signing.verify(public, b"\x01" + payload[1:], sig)
    tampered_sig = bytes([sig[0] ^ 1]) + sig[1:]
    assert not signing.verify(public, payload, tampered_sig)


def test_signature_does_not_verify_with_another_key(key_pool: list[KeyMaterial]) -> None:
    private = signing.load_private_key(key_pool[0].private_key_pem)
    other = signing.load_public_key(key_pool[1].public_key_pem)
    assert not signing.verify(other, b"payload", signing.sign(private, b"payload"))


def test_pss_with_sha256_and_a_32_byte_salt(material: KeyMaterial) -> None:
    private = signing.load_private_key(material.private_key_pem)
    public = signing.load_public_key(material.public_key_pem)
    payload = b"salted"

    sig = signing.sign(private, payload)

    # A verifier that insists on a 32-byte salt accepts; any other salt length rejects.
    public.verify(sig, payload, _pss(32), hashes.SHA256())
    for wrong in (0, 20, 31, 33, 64):
        with pytest.raises(InvalidSignature):
            public.verify(sig, payload, _pss(wrong), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(sig, payload, _pss(32), hashes.SHA384())
    # A random salt makes every signature of the same payload different.
    assert signing.sign(private, payload) != sig


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_stock_openssl_verifies_with_saltlen_32(material: KeyMaterial, tmp_path: Path) -> None:
    private = signing.load_private_key(material.private_key_pem)
    payload = b"checked by openssl\n"
    (tmp_path / "key.pem").write_bytes(material.public_key_pem)
    (tmp_path / "payload.bin").write_bytes(payload)
    (tmp_path / "sig.bin").write_bytes(signing.sign(private, payload))

    def openssl_verify(saltlen: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "openssl",
                "dgst",
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                f"rsa_pss_saltlen:{saltlen}",
                "-verify",
                "key.pem",
                "-signature",
                "sig.bin",
                "payload.bin",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    ok = openssl_verify(32)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verified OK" in ok.stdout
    assert openssl_verify(20).returncode != 0


def test_fingerprint_is_sha256_of_der_subject_public_key_info(material: KeyMaterial) -> None:
    public = signing.load_public_key(material.public_key_pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = hashlib.sha256(der).hexdigest()

    assert signing.fingerprint(public) == expected
    assert material.fingerprint == expected
    assert len(expected) == 64 and expected == expected.lower()
    # Not the hash of the PEM text, nor of the PKCS#1 encoding.
    assert expected != hashlib.sha256(material.public_key_pem).hexdigest()
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert expected != hashlib.sha256(pkcs1).hexdigest()


def test_material_parts_belong_together(material: KeyMaterial) -> None:
    private = signing.load_private_key(material.private_key_pem)

    assert material.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert material.public_key_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert signing.public_pem(private.public_key()) == material.public_key_pem
    assert material.bits == private.key_size == signing.MIN_KEY_BITS
    assert private.public_key().public_numbers().e == signing.PUBLIC_EXPONENT


def test_pkcs1_private_key_loads(material: KeyMaterial) -> None:
    private = signing.load_private_key(material.private_key_pem)
    pkcs1 = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")

    again = signing.load_private_key(pkcs1)

    assert signing.material_of(again).fingerprint == material.fingerprint


def test_non_rsa_keys_are_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(TypeError):
        signing.load_private_key(pem)
    with pytest.raises(TypeError):
        signing.load_public_key(public_pem)


def test_key_material_repr_hides_the_private_key(material: KeyMaterial) -> None:
    body = b"".join(material.private_key_pem.splitlines()[1:-1]).decode()
    for shown in (repr(material), str(material), f"{material!r}", repr([material])):
        assert "PRIVATE" not in shown
        assert body[:24] not in shown
        assert body[-24:] not in shown
        assert material.fingerprint[:16] in shown
