"""The SQL of import and export, and private keys encrypted at rest, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from signwave import signing
from signwave.errors import KeyEncryptionError, RecordImportError, RunInProgress
from signwave.ids import KeyId
from signwave.keycrypt import KeyCipher, new_key
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store import io as store_io
from tests.conftest import seed
from tests.integration.helpers import rows, scalar


def count(db: Database, table: str) -> int:
    return int(scalar(db, f"SELECT COUNT(*) FROM {table}"))


def stored_private_keys(db: Database) -> list[str]:
    return [r[0] for r in rows(db, "SELECT private_key_pem FROM keys ORDER BY id")]


def sign_everything(pipeline: Pipeline) -> None:
    while True:
        report = pipeline.emit()
        if not report.dispatch:
            return
        for batch_id in report.dispatch:
            lease = pipeline.ingest(batch_id)
            assert lease is not None
            assert pipeline.sign(lease) == "signed"


# -- records -------------------------------------------------------------------------------


def test_records_are_inserted_in_chunks_in_one_transaction(db: Database) -> None:
    payloads = [f"payload {i}".encode() for i in range(2_500)] + [b"", b"\x00\xff"]

    n = store_io.import_records(db, iter(payloads), chunk_rows=1_000, chunk_bytes=10_000)

    assert n == len(payloads)
    stored = rows(db, "SELECT payload FROM records ORDER BY id")
    assert [bytes(r[0]) for r in stored] == payloads


def test_a_bad_record_after_several_chunks_leaves_nothing(db: Database, store: Store) -> None:
    store.add_records([b"already there"])

    def payloads() -> Iterator[bytes]:
        for i in range(3_500):
            yield f"p{i}".encode()
        raise RecordImportError("r.jsonl line 3501 is not valid JSON")

    with pytest.raises(RecordImportError, match="line 3501"):
        store_io.import_records(db, payloads(), chunk_rows=1_000)

    assert count(db, "records") == 1


def test_records_import_is_refused_while_a_run_is_in_progress(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=10, keys=1)
    assert store.claim_batches(batch_size=5, limit=10)

    with pytest.raises(RunInProgress, match="in progress"):
        store_io.import_records(db, iter([b"late"]))

    assert count(db, "records") == 10


# -- keys ----------------------------------------------------------------------------------


def test_list_keys_shows_use_and_lease_but_no_key_material(
    db: Database, store: Store, key_pool: list[KeyMaterial], pipeline: Pipeline
) -> None:
    seed(store, key_pool, records=10, keys=2)
    sign_everything(pipeline)  # 10 records, batch size 100: one use of key 1
    store.add_records([b"more"])
    [batch] = store.claim_batches(batch_size=100, limit=10)
    lease = pipeline.ingest(batch)
    assert lease is not None

    infos = store_io.list_keys(db)

    assert [(k.id, k.fingerprint, k.bits) for k in infos] == [
        (1, key_pool[0].fingerprint, 2048),
        (2, key_pool[1].fingerprint, 2048),
    ]
    assert [k.use_count for k in infos] == [1, 0]
    assert infos[0].last_used_at is not None and infos[1].last_used_at is None
    assert [k.leased for k in infos] == [False, True], "the never-used key is leased first (G4)"
    assert not any(k.encrypted for k in infos)
    as_text = repr(infos) + repr([k.as_dict() for k in infos])
    assert "PRIVATE" not in as_text


def test_public_keys_are_exported_in_id_order(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=0, keys=3)

    exported = list(store_io.iter_public_keys(db, chunk=2))

    assert exported == [(KeyId(i + 1), key_pool[i].public_key_pem.decode()) for i in range(3)]


# -- signatures ----------------------------------------------------------------------------


def test_signatures_stream_with_payloads_in_record_order(
    db: Database, store: Store, key_pool: list[KeyMaterial], pipeline: Pipeline
) -> None:
    seed(store, key_pool, records=250, keys=2)
    sign_everything(pipeline)

    exported = list(store_io.iter_signatures(db, chunk=7))

    assert [r.record_id for r in exported] == list(range(1, 251))
    payloads = dict(rows(db, "SELECT id, payload FROM records"))
    publics = {i + 1: signing.load_public_key(key_pool[i].public_key_pem) for i in range(2)}
    for r in exported:
        assert r.payload == bytes(payloads[r.record_id])
        assert signing.verify(publics[r.key_id], r.payload, r.signature)
        assert r.signed_at.tzinfo is not None and r.signed_at.utcoffset() == dt.timedelta(0)
        assert r.signed_at_iso.endswith("+00:00") and "." in r.signed_at_iso
        assert repr(r.payload) not in repr(r)


# -- keys encrypted at rest ----------------------------------------------------------------


@pytest.fixture
def encryption_key() -> str:
    return new_key()


@pytest.fixture
def sealed_store(db: Database, encryption_key: str) -> Store:
    return Store(db, cipher=KeyCipher(encryption_key))


def test_keys_are_stored_encrypted_and_signing_still_works(
    db: Database,
    sealed_store: Store,
    key_pool: list[KeyMaterial],
    key_lock: RedisKeyLock,
    settings: Settings,
) -> None:
    seed(sealed_store, key_pool, records=120, keys=2)

    stored = stored_private_keys(db)
    assert all(s.startswith("fernet:") and "PRIVATE KEY" not in s for s in stored)
    assert all(k.encrypted for k in store_io.list_keys(db))
    assert sealed_store.private_key(KeyId(1)) == (
        key_pool[0].fingerprint,
        key_pool[0].private_key_pem,
    )

    sign_everything(Pipeline(store=sealed_store, lock=key_lock, settings=settings))

    report = [
        signing.verify(
            signing.load_public_key(key_pool[r.key_id - 1].public_key_pem), r.payload, r.signature
        )
        for r in store_io.iter_signatures(db)
    ]
    assert len(report) == 120 and all(report)


def test_a_worker_with_the_wrong_key_fails_the_batch_and_stores_nothing(
    db: Database, sealed_store: Store, key_pool: list[KeyMaterial], key_lock: RedisKeyLock
) -> None:
    seed(sealed_store, key_pool, records=10, keys=1)
    wrong = Store(db, cipher=KeyCipher(new_key()))
    pipeline = Pipeline(
        store=wrong,
        lock=key_lock,
        settings=Settings(database_url=db.url, max_attempts=1, lease_ttl=10),
    )

    [batch] = pipeline.emit().dispatch
    lease = pipeline.ingest(batch)
    assert lease is not None
    assert pipeline.sign(lease) == "failed"

    assert count(db, "signatures") == 0
    [(error,)] = rows(db, "SELECT error FROM batches")
    assert error == "KeyEncryptionError while signing with key 1"
    with pytest.raises(KeyEncryptionError, match="does not decrypt private key 1"):
        store_io.check_key_encryption(db, wrong.cipher)


def test_rotation_from_plaintext_then_to_a_new_key(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=0, keys=3)
    plaintext = stored_private_keys(db)
    first, second = KeyCipher(new_key()), KeyCipher(new_key())

    assert store_io.reseal_private_keys(db, store.cipher, first, chunk=2) == 3
    sealed_once = stored_private_keys(db)
    assert all(s.startswith("fernet:") for s in sealed_once)
    store_io.check_key_encryption(db, first)

    assert store_io.reseal_private_keys(db, first, second) == 3
    store_io.check_key_encryption(db, second)
    with pytest.raises(KeyEncryptionError):
        store_io.check_key_encryption(db, first)
    with pytest.raises(
        KeyEncryptionError, match="stored encrypted: set SIGNWAVE_KEY_ENCRYPTION_KEY"
    ):
        store_io.check_key_encryption(db, store.cipher)
    assert [second.open(s, key_id=KeyId(i + 1)) for i, s in enumerate(stored_private_keys(db))] == [
        p.encode() for p in plaintext
    ]


def test_rotation_is_all_or_nothing(
    db: Database, key_pool: list[KeyMaterial], encryption_key: str
) -> None:
    # Given keys 1 and 2 sealed with one key and key 3 with another
    Store(db, cipher=KeyCipher(encryption_key)).add_keys(key_pool[:2])
    Store(db, cipher=KeyCipher(new_key())).add_keys(key_pool[2:3])
    before = stored_private_keys(db)
    with pytest.raises(KeyEncryptionError, match="private key 3"):
        store_io.check_key_encryption(db, KeyCipher(encryption_key), chunk=1)

    with pytest.raises(KeyEncryptionError, match="private key 3"):
        store_io.reseal_private_keys(db, KeyCipher(encryption_key), KeyCipher(new_key()), chunk=1)

    assert stored_private_keys(db) == before


def test_rotation_is_refused_while_a_run_is_in_progress(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=5, keys=1)
    store.claim_batches(batch_size=5, limit=1)
    before = stored_private_keys(db)

    with pytest.raises(RunInProgress):
        store_io.reseal_private_keys(db, store.cipher, KeyCipher(new_key()))

    assert stored_private_keys(db) == before


def test_stopping_an_export_early_closes_its_cursor(
    db: Database, store: Store, key_pool: list[KeyMaterial], pipeline: Pipeline
) -> None:
    # On PostgreSQL these are server-side cursors; warnings are errors in this suite.
    seed(store, key_pool, records=30, keys=2)
    sign_everything(pipeline)

    signatures = store_io.iter_signatures(db, chunk=4)
    public_keys = store_io.iter_public_keys(db, chunk=1)
    assert next(signatures).record_id == 1
    assert next(public_keys)[0] == 1
    signatures.close()
    public_keys.close()

    assert len(list(store_io.iter_signatures(db, chunk=4))) == 30
