"""Bad input through the real CLI (SPEC §7): one line on stderr, a non-zero exit, no
traceback, and nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.engine import sqlite_file
from tests.conftest import seed
from tests.pemfiles import BAD, make_pem_files
from tests.support import child_env, cli, independent_check


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pem_files(tmp_path_factory.mktemp("pem"))


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The error line, after checking it is the whole of stderr."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("signwave: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def counts(database_url: str) -> tuple[int, int]:
    c = independent_check(database_url)
    keys = Database(database_url)
    with keys.read() as conn:
        n_keys = int(conn.exec_driver_sql("SELECT count(*) FROM keys").scalar_one())
    keys.dispose()
    return c["records"], n_keys


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_key_file_imports_nothing(
    db: Database, settings: Settings, pem_files: dict[str, Path], name: str
) -> None:
    # A good file first: all or nothing means it is not imported either.
    result = cli(settings, "keys", "import", str(pem_files["pkcs8"]), str(pem_files[name]))

    one_line_error(result, str(pem_files[name]), *BAD[name])
    assert counts(settings.database_url) == (0, 0)


def test_an_unreadable_key_file_is_named(db: Database, settings: Settings, tmp_path: Path) -> None:
    result = cli(settings, "keys", "import", str(tmp_path / "nope.pem"))

    one_line_error(result, "cannot read", "nope.pem", "No such file")


def test_duplicate_keys_are_reported_and_skipped(
    db: Database, settings: Settings, pem_files: dict[str, Path]
) -> None:
    first = cli(settings, "keys", "import", str(pem_files["pkcs8"]))
    assert first.returncode == 0, first.stderr

    again = cli(settings, "keys", "import", str(pem_files["two_keys"]), str(pem_files["pkcs1"]))

    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert f"skipped {pem_files['two_keys']} block 1: already imported" in again.stderr
    assert f"skipped {pem_files['pkcs1']} block 1: same key as {pem_files['two_keys']} block 2" in (
        again.stderr
    )
    assert "imported 1 key, skipped 2 duplicates" in again.stdout
    listed = json.loads(cli(settings, "keys", "list", "--json").stdout)
    assert len(listed) == 2 and len({k["fingerprint"] for k in listed}) == 2


# -- records -----------------------------------------------------------------------------------


RECORD_CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "empty.jsonl": (b"", ("empty.jsonl", "no records")),
    "blank.txt": (b"\n\n", ("blank.txt", "empty")),
    "latin1.csv": (b"payload\ncaf\xe9\n", ("latin1.csv line 2", "not UTF-8")),
    "binary.jsonl": (b'{"payload": "a"}\n\x00\xff\xfe\n', ("binary.jsonl line 2", "UTF-8")),
    "array.jsonl": (b'{"payload": "a"}\n["b"]\n', ("array.jsonl line 2", "JSON array")),
    "number.jsonl": (b"7\n", ("number.jsonl line 1", "not an object")),
    "nofield.jsonl": (b'{"payload": "a"}\n{"text": "b"}\n', ("nofield.jsonl line 2", '"payload"')),
    "broken.jsonl": (b'{"payload": "a"\n', ("broken.jsonl line 1", "not valid JSON")),
    "nocolumn.csv": (b"id,text\n1,a\n", ("nocolumn.csv line 1", "no 'payload' column")),
    "fields.csv": (b"id,payload\n1,a\n2\n", ("fields.csv line 3", "1 fields")),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RECORD_CASES))
def test_a_bad_records_file_imports_nothing(
    db: Database, store: Store, settings: Settings, tmp_path: Path, name: str
) -> None:
    store.add_records([b"one", b"two", b"three"])
    data, words = RECORD_CASES[name]
    path = tmp_path / name
    path.write_bytes(data)

    result = cli(settings, "records", "import", str(path))

    one_line_error(result, *words)
    assert counts(settings.database_url) == (3, 0)


def test_a_bad_line_after_many_chunks_leaves_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    # More than two chunks of good lines are inserted before the bad one is read.
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(12_000):
            f.write(json.dumps({"payload": f"record {i}"}) + "\n")
        f.write('{"payload": 12001}\n')

    result = cli(settings, "records", "import", str(path))

    one_line_error(result, "big.jsonl line 12001", "must be a string")
    assert counts(settings.database_url) == (0, 0)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_an_unreadable_records_file_is_named(
    db: Database, settings: Settings, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "records.jsonl"
    if kind == "directory":
        path.mkdir()

    result = cli(settings, "records", "import", str(path))

    one_line_error(result, "records.jsonl")
    assert counts(settings.database_url) == (0, 0)


# -- a run in progress -------------------------------------------------------------------------


def test_seed_and_imports_are_refused_while_a_run_is_in_progress(
    db: Database,
    store: Store,
    settings: Settings,
    key_pool: list[KeyMaterial],
    pem_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    # Given a batch claimed and not yet signed
    seed(store, key_pool, records=20, keys=1)
    assert store.claim_batches(batch_size=10, limit=1)
    records = tmp_path / "r.jsonl"
    records.write_text('{"payload": "late"}\n')

    for args in (
        ["seed", "--records", "5", "--keys", "1"],
        ["records", "import", str(records)],
        ["keys", "import", str(pem_files["pkcs8"])],
    ):
        result = cli(settings, *args)
        one_line_error(result, "a signing run is in progress", "signwave status")

    assert counts(settings.database_url) == (20, 1)


# -- batch size --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "abc", "100001", "1.5"])
def test_a_bad_batch_size_flag_is_one_line(tmp_path: Path, value: str) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")

    result = cli(settings, "run", "--batch-size", value)

    line = one_line_error(result, "--batch-size", value, "signwave run --help")
    assert "Usage:" not in result.stderr
    assert "positive integer" in line or "too large" in line
    assert not (tmp_path / "x.db").exists(), "refused before touching the database"


@pytest.mark.parametrize("value", ["0", "-1", "abc", "100001"])
def test_a_bad_batch_size_variable_is_one_line(tmp_path: Path, value: str) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")

    result = cli(settings, "run", SIGNWAVE_BATCH_SIZE=value)

    line = one_line_error(result, "SIGNWAVE_BATCH_SIZE", value)
    assert "integer" in line or "too large" in line


@pytest.mark.parametrize("command", ["worker", "beat", "flower"])
def test_a_bad_variable_under_celery_is_one_line(tmp_path: Path, command: str) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "signwave", command],
        env=child_env(settings, SIGNWAVE_BATCH_SIZE="abc"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    one_line_error(result, "SIGNWAVE_BATCH_SIZE", "'abc'", "integer")


# -- services ----------------------------------------------------------------------------------


UNREACHABLE_PG = "postgresql+psycopg://user:secret@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "args",
    [["status"], ["keys", "list"], ["records", "import", "r.jsonl"], ["export", "signatures", "-"]],
)
def test_an_unreachable_database_is_named_without_its_password(args: list[str]) -> None:
    result = cli(Settings(database_url=UNREACHABLE_PG), *args)

    line = one_line_error(result, "cannot reach the database", "user:***@127.0.0.1:1/x")
    assert "secret" not in result.stderr + result.stdout
    assert "SIGNWAVE_DATABASE_URL" in line


def test_an_unreachable_redis_is_named_without_its_password(
    db: Database, store: Store, key_pool: list[KeyMaterial], database_url: str
) -> None:
    # An explicit broker: no private redis-server is started in its place.
    seed(store, key_pool, records=10, keys=1)
    url = "redis://:secret@127.0.0.1:1/0"
    settings = Settings(database_url=database_url, redis_url=url, broker_url=url)

    result = cli(settings, "run", "--workers", "1")

    one_line_error(result, "cannot reach Redis", "redis://:***@127.0.0.1:1/0")
    assert "secret" not in result.stderr + result.stdout
    assert independent_check(database_url)["signatures"] == 0


@pytest.mark.parametrize(
    "args", [["status"], ["keys", "list"], ["verify"], ["export", "signatures", "-"]]
)
def test_an_uninitialised_database_says_to_run_db_init(database_url: str, args: list[str]) -> None:
    path = sqlite_file(database_url)
    if path is not None:
        path.touch(mode=0o600)  # an empty SQLite file: a database without the schema

    result = cli(Settings(database_url=database_url), *args)

    one_line_error(result, "no signwave schema", "run `signwave db init`")


@pytest.mark.parametrize(
    "args", [["status"], ["keys", "list"], ["verify"], ["export", "signatures", "-"]]
)
def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "mistyped.db"

    result = cli(Settings(database_url=f"sqlite:///{path}"), *args)

    one_line_error(result, "there is no database at", str(path), "run `signwave db init`")
    assert not path.exists()
