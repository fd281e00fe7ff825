"""Bulk inserts: COPY on PostgreSQL (an order of magnitude faster than INSERT
for a batch), executemany on SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

import psycopg
from sqlalchemy import Connection, Table, insert

from signwave.store.engine import Database

T = TypeVar("T")


def batched(items: Iterable[T], n: int) -> Iterator[tuple[T, ...]]:
    it = iter(items)
    while group := tuple(islice(it, n)):
        yield group


def insert_rows(
    db: Database,
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> None:
    if db.is_sqlite:
        for group in batched(rows, 5_000):
            conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in group])
        return
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
