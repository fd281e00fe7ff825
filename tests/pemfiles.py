"""Key files made by the real `openssl` command, good and bad, for import tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GOOD = ("pkcs8", "pkcs1", "two_keys")
# name -> words the one-line error must contain (besides the file name)
BAD: dict[str, tuple[str, ...]] = {
    "malformed": ("block 1", "malformed"),
    "truncated": ("block 1", "malformed", "no END line"),
    "certificate": ("block 1", "certificate", "not a private key"),
    "public": ("block 1", "public key", "not a private key"),
    "rsa_public": ("block 1", "public key"),
    "encrypted_pkcs8": ("block 1", "encrypted", "passphrase"),
    "encrypted_pkcs1": ("block 1", "encrypted", "passphrase"),
    "ec": ("block 1", "EC key", "only RSA"),
    "ec_traditional": ("block 1", "EC", "only RSA"),
    "ed25519": ("block 1", "Ed25519", "only RSA"),
    "rsa_1024": ("block 1", "1024-bit", "at least 2048"),
    "key_then_certificate": ("block 2", "certificate"),
    "empty": ("empty",),
    "binary": ("not a PEM file",),
    "no_block": ("no PEM block",),
}


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pem_files(directory: Path) -> dict[str, Path]:
    """Every case of `GOOD` and `BAD` as a file in ``directory``."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    openssl("genrsa", "-out", "pkcs8.pem", "2048", cwd=d)  # PKCS#8 with OpenSSL 3
    openssl("genrsa", "-traditional", "-out", "pkcs1.pem", "2048", cwd=d)
    openssl("genrsa", "-out", "rsa_1024.pem", "1024", cwd=d)
    for name, extra in (("encrypted_pkcs8", []), ("encrypted_pkcs1", ["-traditional"])):
        openssl(
            "genrsa", *extra, "-aes256", "-passout", "pass:secret", "-out", f"{name}.pem", "2048",
            cwd=d,
        )  # fmt: skip
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "ec.pem", cwd=d)  # fmt: skip
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", "ec_traditional.pem", cwd=d)
    openssl("genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem", cwd=d)
    openssl("req", "-x509", "-key", "pkcs8.pem", "-subj", "/CN=signwave-test", "-days", "1",
            "-out", "certificate.pem", cwd=d)  # fmt: skip
    openssl("pkey", "-in", "pkcs8.pem", "-pubout", "-out", "public.pem", cwd=d)
    openssl("rsa", "-in", "pkcs8.pem", "-RSAPublicKey_out", "-out", "rsa_public.pem", cwd=d)
    pkcs8 = (d / "pkcs8.pem").read_bytes()
    pkcs1 = (d / "pkcs1.pem").read_bytes()
    (d / "two_keys.pem").write_bytes(b"first key\n" + pkcs8 + b"\nsecond key\n" + pkcs1)
    lines = pkcs8.splitlines(keepends=True)
    # A character that is not base64, in the middle of the body.
    middle = len(lines) // 2
    lines[middle] = lines[middle][:10] + b"!" + lines[middle][11:]
    (d / "malformed.pem").write_bytes(b"".join(lines))
    (d / "truncated.pem").write_bytes(pkcs8[: len(pkcs8) // 2])
    (d / "key_then_certificate.pem").write_bytes(pkcs1 + (d / "certificate.pem").read_bytes())
    (d / "empty.pem").write_bytes(b"")
    (d / "binary.pem").write_bytes(os.urandom(300) + b"\xff\xfe")
    (d / "no_block.pem").write_text("just some text\nwithout any key\n")
    return {p.stem: p for p in d.glob("*.pem")}


def pem_body(pem: bytes) -> str:
    """The base64 body of a PEM block, on one line."""
    return "".join(line for line in pem.decode().splitlines() if line and "-----" not in line)


def slices(secret: str, width: int = 40) -> list[str]:
    """Every ``width``-character slice of ``secret``."""
    return [secret[i : i + width] for i in range(len(secret) - width + 1)]
