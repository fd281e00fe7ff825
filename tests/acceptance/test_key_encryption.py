"""Private keys encrypted at rest (SIGNWAVE_KEY_ENCRYPTION_KEY), through the real CLI and
`signwave run`: stored encrypted, signed with, rotated, and a wrong key refused in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text

from signwave.keycrypt import new_key
from signwave.settings import Settings
from tests.pemfiles import openssl
from tests.support import assert_all_signed_once, cli, independent_check


def stored_keys(database_url: str) -> list[str]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        values = [r[0] for r in conn.execute(text("SELECT private_key_pem FROM keys ORDER BY id"))]
    engine.dispose()
    return values


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signwave: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def records_file(path: Path, first: int, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"payload": f"r{i}"}) + "\n" for i in range(first, first + n))
    )
    return path


def test_encrypted_keys_sign_rotate_and_refuse_a_wrong_key(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    first, second = new_key(), new_key()
    settings = Settings(
        database_url=database_url, redis_url=redis_url, lease_ttl=15, key_encryption_key=first
    )
    openssl("genrsa", "-out", "a.pem", "2048", cwd=tmp_path)
    openssl("genrsa", "-traditional", "-out", "b.pem", "2048", cwd=tmp_path)

    # Given keys imported while SIGNWAVE_KEY_ENCRYPTION_KEY is set
    ok(cli(settings, "db", "init"))
    imported = ok(cli(settings, "keys", "import", str(tmp_path / "a.pem"), str(tmp_path / "b.pem")))
    assert "(encrypted at rest)" in imported.stdout
    ok(cli(settings, "records", "import", str(records_file(tmp_path / "r1.jsonl", 0, 120))))
    # Then the column holds no PEM
    sealed = stored_keys(database_url)
    assert len(sealed) == 2
    assert all(v.startswith("fernet:") and "PRIVATE KEY" not in v for v in sealed)
    pem_a = (tmp_path / "a.pem").read_text().splitlines()[1]
    assert not any(pem_a in v for v in sealed)
    listed = json.loads(ok(cli(settings, "keys", "list", "--json")).stdout)
    assert [k["encrypted"] for k in listed] == [True, True]
    # And real workers sign with them
    run = ok(cli(settings, "run", "--workers", "2", "--batch-size", "30"))
    assert "verify: all guarantees hold" in run.stdout
    assert_all_signed_once(database_url, 120)

    # When the keys are rotated (the new key from its environment variable)
    rotated = ok(cli(settings, "keys", "rotate-encryption", SIGNWAVE_NEW_KEY_ENCRYPTION_KEY=second))
    assert "re-encrypted 2 private keys" in rotated.stdout
    resealed = stored_keys(database_url)
    assert all(v.startswith("fernet:") for v in resealed) and resealed != sealed
    ok(cli(settings, "records", "import", str(records_file(tmp_path / "r2.jsonl", 120, 60))))

    # Then the old key is refused in one line, before any worker starts
    stale = cli(settings, "run", "--workers", "2", "--batch-size", "30")
    one_line_error(stale, "SIGNWAVE_KEY_ENCRYPTION_KEY does not decrypt private key 1")
    assert first not in stale.stderr and second not in stale.stderr
    assert independent_check(database_url)["signatures"] == 120
    # ...as is no key at all, and a rotation from the wrong key changes nothing
    plain = Settings(database_url=database_url, redis_url=redis_url, lease_ttl=15)
    one_line_error(cli(plain, "run", "--workers", "1"), "set SIGNWAVE_KEY_ENCRYPTION_KEY")
    one_line_error(
        cli(settings, "keys", "rotate-encryption", "--new-key", new_key()),
        "does not decrypt private key 1",
    )
    assert stored_keys(database_url) == resealed
    # ...and keys sealed differently would not be added beside them
    openssl("genrsa", "-out", "c.pem", "2048", cwd=tmp_path)
    one_line_error(cli(plain, "keys", "import", str(tmp_path / "c.pem")), "stored encrypted")
    one_line_error(cli(settings, "seed", "--keys", "1"), "does not decrypt private key 1")
    assert stored_keys(database_url) == resealed

    # And with the new key, signing goes on
    current = Settings(
        database_url=database_url, redis_url=redis_url, lease_ttl=15, key_encryption_key=second
    )
    ok(cli(current, "run", "--workers", "2", "--batch-size", "30"))
    assert_all_signed_once(database_url, 180)


def test_plaintext_keys_can_be_encrypted_later(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    key = new_key()
    plain = Settings(database_url=database_url, redis_url=redis_url, lease_ttl=15)
    ok(cli(plain, "db", "init"))
    ok(cli(plain, "seed", "--records", "90", "--keys", "3"))
    assert all(v.startswith("-----BEGIN PRIVATE KEY-----") for v in stored_keys(database_url))

    ok(cli(plain, "keys", "rotate-encryption", "--new-key", key))

    assert all(v.startswith("fernet:") for v in stored_keys(database_url))
    encrypted = Settings(
        database_url=database_url, redis_url=redis_url, lease_ttl=15, key_encryption_key=key
    )
    ok(cli(encrypted, "run", "--workers", "2", "--batch-size", "30"))
    assert_all_signed_once(database_url, 90)


def test_generate_encryption_key_prints_a_usable_key(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")

    printed = ok(cli(settings, "keys", "generate-encryption-key")).stdout.strip()

    assert Settings(key_encryption_key=printed).key_encryption_key == printed
    assert printed != ok(cli(settings, "keys", "generate-encryption-key")).stdout.strip()
