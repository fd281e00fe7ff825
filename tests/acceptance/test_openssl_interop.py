"""Keys made by `openssl`, records from files, signed by `signwave run`, verified by `openssl`
(SPEC §4): bring your own keys and records, export, verify with stock tools."""

from __future__ import annotations

import base64
import csv
import json
import random
import subprocess
from pathlib import Path

from signwave.settings import Settings
from tests.pemfiles import openssl
from tests.support import assert_all_signed_once, cli

TEXT_RECORDS = 150
BINARY_RECORDS = 100
CSV_RECORDS = 50
TOTAL = TEXT_RECORDS + BINARY_RECORDS + CSV_RECORDS


def verify_with_openssl(public_pem: Path, payload: bytes, signature: bytes, tmp: Path) -> bool:
    (tmp / "payload.bin").write_bytes(payload)
    (tmp / "sig.bin").write_bytes(signature)
    result = subprocess.run(
        [
            "openssl", "dgst", "-sha256",
            "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
            "-verify", str(public_pem), "-signature", "sig.bin", "payload.bin",
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0 and "Verified OK" in result.stdout


def test_openssl_keys_sign_records_that_openssl_verifies(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, redis_url=redis_url, lease_ttl=15)
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    # Given keys from OpenSSL: PKCS#8 (OpenSSL 3's default) and PKCS#1, one file with two keys
    openssl("genrsa", "-out", "pkcs8.pem", "2048", cwd=keys_dir)
    openssl("genrsa", "-traditional", "-out", "pkcs1.pem", "2048", cwd=keys_dir)
    openssl("genrsa", "-out", "third.pem", "3072", cwd=keys_dir)
    assert (keys_dir / "pkcs8.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (keys_dir / "pkcs1.pem").read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    both = keys_dir / "both.pem"
    both.write_bytes((keys_dir / "pkcs1.pem").read_bytes() + (keys_dir / "third.pem").read_bytes())
    # ...and records: JSON Lines with text and binary payloads, and CSV
    rng = random.Random(4)
    texts = [f"record {i}: héllo, wörld \u2603 {rng.random()}" for i in range(TEXT_RECORDS)]
    blobs = [rng.randbytes(rng.randrange(0, 200)) for _ in range(BINARY_RECORDS)]
    jsonl = tmp_path / "records.jsonl"
    with jsonl.open("w") as f:
        for t in texts:
            f.write(json.dumps({"payload": t}) + "\n")
        for b in blobs:
            f.write(json.dumps({"payload_b64": base64.b64encode(b).decode()}) + "\n")
    csv_texts = [f'line {i}, with "quotes"\nand a newline' for i in range(CSV_RECORDS)]
    csv_file = tmp_path / "records.csv"
    with csv_file.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "payload"])
        writer.writerows([i, t] for i, t in enumerate(csv_texts))
    expected = [t.encode() for t in texts] + blobs + [t.encode() for t in csv_texts]

    # When they are imported, signed by real Celery workers and exported
    assert cli(settings, "db", "init").returncode == 0
    imported = cli(settings, "keys", "import", str(keys_dir / "pkcs8.pem"), str(both))
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 keys" in imported.stdout
    for path in (jsonl, csv_file):
        result = cli(settings, "records", "import", str(path))
        assert result.returncode == 0, result.stderr
    run = cli(settings, "run", "--workers", "2", "--batch-size", "40")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verify: all guarantees hold" in run.stdout
    assert_all_signed_once(database_url, TOTAL)
    exported = tmp_path / "signatures.jsonl"
    result = cli(settings, "export", "signatures", str(exported))
    assert result.returncode == 0, result.stderr
    public_dir = tmp_path / "public"
    result = cli(settings, "keys", "export-public", str(public_dir))
    assert result.returncode == 0, result.stderr

    # Then the export holds every record once, byte for byte
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [row["record_id"] for row in lines] == list(range(1, TOTAL + 1))
    assert [base64.b64decode(row["payload_b64"]) for row in lines] == expected
    for row in lines:
        assert set(row) == {
            "record_id", "key_id", "batch_id", "payload_b64", "signature_b64", "signed_at"
        }  # fmt: skip
        assert row["signed_at"].endswith("+00:00") and len(row["signed_at"]) == 32
    used = {row["key_id"] for row in lines}
    assert used == {1, 2, 3}, "least recently used first: every key signed some batch"
    # ...the public keys are OpenSSL's own, key by key
    for key_id, source in ((1, "pkcs8.pem"), (2, "pkcs1.pem"), (3, "third.pem")):
        ours = (public_dir / f"{key_id}.pem").read_text()
        theirs = subprocess.run(
            ["openssl", "pkey", "-in", str(keys_dir / source), "-pubout"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert ours == theirs
    # ...and OpenSSL verifies a sample of signatures of every key, and rejects tampering
    sample = rng.sample(lines, 12) + [next(r for r in lines if r["key_id"] == k) for k in used]
    work = tmp_path / "verify"
    work.mkdir()
    for row in sample:
        public = public_dir / f"{row['key_id']}.pem"
        payload = base64.b64decode(row["payload_b64"])
        signature = base64.b64decode(row["signature_b64"])
        assert verify_with_openssl(public, payload, signature, work), row["record_id"]
        assert not verify_with_openssl(public, payload + b"!", signature, work)
        other = public_dir / f"{row['key_id'] % 3 + 1}.pem"
        assert not verify_with_openssl(other, payload, signature, work)
