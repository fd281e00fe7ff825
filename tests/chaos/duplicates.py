"""Duplicate delivery from a process of its own: `python -m tests.chaos.duplicates SECS COPIES`.

Reads the tables and sends, through signwave's own Celery app and broker,
COPIES messages back to back for every in-flight batch (``ingest``), every
current lease (``sign``), the latest finished leases (``sign`` and ``ingest``
again, long after the fact) and ``emit``. Prints the counts as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from sqlalchemy import text

from signwave.celery import app
from signwave.runtime import settings
from signwave.store import open_database

POLL_S = 0.25


def main(seconds: float, copies: int) -> dict[str, int]:
    db = open_database(settings().database_url)
    sent = {"ingest": 0, "sign": 0, "emit": 0, "replayed_sign": 0, "rounds": 0}
    until = time.monotonic() + seconds

    def send(name: str, args: list[int], kind: str) -> None:
        for _ in range(copies):
            app.send_task(name, args=args)
            sent[kind] += 1

    while time.monotonic() < until:
        with db.read() as conn:
            in_flight = conn.execute(
                text("SELECT id FROM batches WHERE status IN ('pending', 'leased')")
            ).all()
            leases = conn.execute(
                text(
                    "SELECT lease_batch_id, id, lease_token FROM keys WHERE lease_token IS NOT NULL"
                )
            ).all()
            finished = conn.execute(
                text(
                    "SELECT batch_id, key_id, token FROM key_leases "
                    "WHERE released_at IS NOT NULL ORDER BY id DESC LIMIT 3"
                )
            ).all()
            unbatched = conn.execute(
                text("SELECT count(*) FROM records WHERE batch_id IS NULL")
            ).scalar_one()
        # The last round, once all is signed, still replays finished leases.
        done = not in_flight and not leases and not unbatched
        for (batch_id,) in in_flight:
            send("signwave.ingest", [batch_id], "ingest")
        for batch_id, key_id, token in leases:
            send("signwave.sign", [batch_id, key_id, token], "sign")
        for batch_id, key_id, token in finished:
            send("signwave.sign", [batch_id, key_id, token], "replayed_sign")
            send("signwave.ingest", [batch_id], "ingest")
        send("signwave.emit", [], "emit")
        sent["rounds"] += 1
        if done:
            break
        time.sleep(POLL_S)
    db.dispose()
    return sent


if __name__ == "__main__":
    counts = main(float(sys.argv[1]), int(sys.argv[2]))
    print(json.dumps(counts))
