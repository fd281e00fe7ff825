"""Private keys from PEM files, for `signwave keys import` (SPEC §4).

Pure: bytes in, `KeyMaterial` out. Every PEM block of a file must be an
unencrypted RSA private key of at least 2048 bits, PKCS#1 or PKCS#8; anything
else is an error that names the file and the block. Messages never quote the
file's content, which may be key material.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from signwave.errors import KeyImportError
from signwave.signing import MIN_KEY_BITS, KeyMaterial, material_of

MAX_FILE_BYTES = 16 * 1024 * 1024
ACCEPTED = "-----BEGIN PRIVATE KEY----- (PKCS#8) or -----BEGIN RSA PRIVATE KEY----- (PKCS#1)"

_PRIVATE_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY")
_NOT_PRIVATE = {
    "CERTIFICATE": "a certificate",
    "TRUSTED CERTIFICATE": "a certificate",
    "X509 CERTIFICATE": "a certificate",
    "CERTIFICATE REQUEST": "a certificate request",
    "NEW CERTIFICATE REQUEST": "a certificate request",
    "PUBLIC KEY": "a public key",
    "RSA PUBLIC KEY": "a public key",
    "X509 CRL": "a certificate revocation list",
}
_NON_RSA_LABELS = {
    "EC PRIVATE KEY": "an EC key",
    "EC PARAMETERS": "EC parameters (of an EC key)",
    "DSA PRIVATE KEY": "a DSA key",
    "OPENSSH PRIVATE KEY": "an OpenSSH-format key",
}
_KEY_KINDS: tuple[tuple[type, str], ...] = (
    (ec.EllipticCurvePrivateKey, "an EC key"),
    (ed25519.Ed25519PrivateKey, "an Ed25519 key"),
    (ed448.Ed448PrivateKey, "an Ed448 key"),
    (dsa.DSAPrivateKey, "a DSA key"),
    (x25519.X25519PrivateKey, "an X25519 key"),
    (x448.X448PrivateKey, "an X448 key"),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParsedKey:
    source: str
    """Where the key came from, for messages: ``keys.pem block 2``."""
    material: KeyMaterial


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Block:
    number: int
    label: str
    headers: tuple[str, ...]
    body: tuple[str, ...]


def read_key_files(paths: Sequence[Path]) -> list[ParsedKey]:
    """Every key of every file, in order; raises `KeyImportError` at the first bad one."""
    keys: list[ParsedKey] = []
    for path in paths:
        keys.extend(parse_keys(_read(path), name=str(path)))
    return keys


def parse_keys(data: bytes, *, name: str) -> list[ParsedKey]:
    """The RSA private keys of one PEM file's content; ``name`` is used in messages."""
    if not data.strip():
        raise KeyImportError(f"{name} is empty: expected PEM private keys ({ACCEPTED})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyImportError(
            f"{name} is not a PEM file (binary data; DER keys are not supported: convert with "
            f"`openssl pkey -inform DER -in {name} -out key.pem`)"
        ) from None
    blocks = _blocks(text, name)
    if not blocks:
        raise KeyImportError(f"{name} contains no PEM block: expected {ACCEPTED}")
    return [_parse_block(block, name) for block in blocks]


def split_duplicates(
    keys: Iterable[ParsedKey],
) -> tuple[list[ParsedKey], list[tuple[ParsedKey, ParsedKey]]]:
    """(first occurrence of each key, [(repeat, first occurrence)]), by fingerprint."""
    first: dict[str, ParsedKey] = {}
    repeats: list[tuple[ParsedKey, ParsedKey]] = []
    for key in keys:
        seen = first.get(key.material.fingerprint)
        if seen is None:
            first[key.material.fingerprint] = key
        else:
            repeats.append((key, seen))
    return list(first.values()), repeats


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KeyImportError(
            f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: not a PEM key file"
        )
    return data


def _blocks(text: str, name: str) -> list[_Block]:
    """PEM blocks (RFC 7468); text outside blocks is ignored, as OpenSSL does."""
    blocks: list[_Block] = []
    label: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN ") and line.endswith("-----") and len(line) >= 16:
            if label is not None:
                raise KeyImportError(
                    f"{name} block {len(blocks) + 1} is malformed PEM: "
                    f"-----BEGIN {label}----- has no END line"
                )
            label, lines = line[11:-5], []
        elif line.startswith("-----END ") and line.endswith("-----") and len(line) >= 14:
            end = line[9:-5]
            if label is None:
                raise KeyImportError(
                    f"{name} block {len(blocks) + 1} is malformed PEM: END line without BEGIN line"
                )
            if end != label:
                raise KeyImportError(
                    f"{name} block {len(blocks) + 1} is malformed PEM: "
                    f"-----BEGIN {label}----- ends with -----END {end}-----"
                )
            blocks.append(_split_headers(len(blocks) + 1, label, lines))
            label = None
        elif label is not None:
            lines.append(line)
    if label is not None:
        raise KeyImportError(
            f"{name} block {len(blocks) + 1} is malformed PEM: "
            f"-----BEGIN {label}----- has no END line (file cut short?)"
        )
    return blocks


def _split_headers(number: int, label: str, lines: list[str]) -> _Block:
    # RFC 1421 headers ("Proc-Type: 4,ENCRYPTED") come first, then a blank line.
    headers: list[str] = []
    i = 0
    while i < len(lines) and ":" in lines[i]:
        headers.append(lines[i])
        i += 1
    body = tuple(line for line in lines[i:] if line)
    return _Block(number=number, label=label, headers=tuple(headers), body=body)


def _parse_block(block: _Block, name: str) -> ParsedKey:
    source = f"{name} block {block.number}"

    def fail(problem: str) -> KeyImportError:
        return KeyImportError(f"{source} {problem}")

    encrypted_hint = (
        "is an encrypted private key: signwave takes no passphrase; decrypt it first "
        f"(`openssl pkey -in {name} -out plain.pem`) and import plain.pem"
    )
    if block.label == "ENCRYPTED PRIVATE KEY" or any(
        h.upper().startswith("PROC-TYPE") and "ENCRYPTED" in h.upper() for h in block.headers
    ):
        raise fail(encrypted_hint)
    if block.label in _NOT_PRIVATE:
        raise fail(f"is {_NOT_PRIVATE[block.label]}, not a private key: expected {ACCEPTED}")
    if block.label in _NON_RSA_LABELS:
        raise fail(f"is {_NON_RSA_LABELS[block.label]}: only RSA private keys can be imported")
    if block.label not in _PRIVATE_LABELS:
        raise fail(f"is a {block.label!r} block, not a private key: expected {ACCEPTED}")
    pem = "\n".join((f"-----BEGIN {block.label}-----", *block.body, f"-----END {block.label}-----"))
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii", "replace"), password=None)
    except TypeError:
        raise fail(encrypted_hint) from None
    except (ValueError, UnsupportedAlgorithm):
        kind = "PKCS#8" if block.label == "PRIVATE KEY" else "PKCS#1 RSA"
        raise fail(
            f"is malformed PEM: the base64 body is not a valid {kind} private key "
            "(damaged or truncated?)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = next((k for t, k in _KEY_KINDS if isinstance(key, t)), "not an RSA key")
        raise fail(f"is {kind}: only RSA private keys can be imported")
    if key.key_size < MIN_KEY_BITS:
        raise fail(
            f"is a {key.key_size}-bit RSA key: at least {MIN_KEY_BITS} bits are required "
            f"(make one with `openssl genrsa {MIN_KEY_BITS}`)"
        )
    return ParsedKey(source=source, material=material_of(key))
