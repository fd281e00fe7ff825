"""Pure signing: RSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (SPEC §4).

No I/O here; key material is passed in and out as bytes and never logged.
"""

from __future__ import annotations

import dataclasses
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM = "RSA-PSS-SHA256"
SALT_LENGTH = 32
PUBLIC_EXPONENT = 65537
MIN_KEY_BITS = 2048

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=SALT_LENGTH)
_SHA256 = hashes.SHA256()


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class KeyMaterial:
    """A key ready for storage. Its repr never shows the private part."""

    private_key_pem: bytes
    public_key_pem: bytes
    fingerprint: str
    bits: int

    def __repr__(self) -> str:
        return f"KeyMaterial(fingerprint={self.fingerprint[:16]}…, bits={self.bits})"


def generate_key(bits: int = MIN_KEY_BITS) -> KeyMaterial:
    """A new RSA key, e = 65537, as PKCS#8 PEM."""
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)
    return material_of(key)


def material_of(key: rsa.RSAPrivateKey) -> KeyMaterial:
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key()
    return KeyMaterial(
        private_key_pem=private_pem,
        public_key_pem=public_pem(public),
        fingerprint=fingerprint(public),
        bits=key.key_size,
    )


def public_pem(public: rsa.RSAPublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(public: rsa.RSAPublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_private_key(pem: bytes, *, validated: bool = False) -> rsa.RSAPrivateKey:
    """Parse a PEM private key.

    ``validated=True`` skips the RSA consistency checks (about 50 ms a key):
    only for keys that were checked when they were stored, as every key in
    the database was.
    """
    key = serialization.load_pem_private_key(
        pem, password=None, unsafe_skip_rsa_key_validation=validated
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("not an RSA public key")
    return key


def sign(key: rsa.RSAPrivateKey, payload: bytes) -> bytes:
    return key.sign(payload, _PSS, _SHA256)


def verify(public: rsa.RSAPublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, payload, _PSS, _SHA256)
    except InvalidSignature:
        return False
    return True
