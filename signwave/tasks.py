"""Thin Celery tasks: take ids and tokens, call the pipeline, enqueue follow-ups after commit."""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError

from signwave.celery import app
from signwave.errors import DatabaseUnavailable, NoKeyAvailable, RedisUnavailable
from signwave.ids import BatchId, KeyId, LeaseToken
from signwave.runtime import pipeline
from signwave.store.store import Lease

logger = logging.getLogger(__name__)

TRANSIENT = (OperationalError, DatabaseUnavailable, RedisUnavailable)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 0.5,
    "retry_backoff_max": 10,
    "retry_jitter": True,
    "max_retries": 20,
}


def _dispatch(batch_ids: list[BatchId]) -> None:
    """Send an ingest per batch. The batches are committed as dispatched: if
    the broker is gone, emit sends them again after SIGNWAVE_REDISPATCH_AFTER,
    and a chained sign goes on with the batch it already holds."""
    for i, batch_id in enumerate(batch_ids):
        try:
            ingest.delay(batch_id)
        except kombu.exceptions.OperationalError as exc:
            logger.warning(
                "could not send ingest for %d batches (%s); emit sends them again later",
                len(batch_ids) - i,
                exc,
                extra={"action": "dispatch_failed", "batch_id": batch_id},
            )
            return


@app.task(name="signwave.emit", **RETRY)
def emit() -> None:
    _dispatch(pipeline().emit().dispatch)


@app.task(name="signwave.ingest", bind=True, **RETRY)
def ingest(self: Any, batch_id: int) -> None:
    try:
        lease = pipeline().ingest(BatchId(batch_id))
    except NoKeyAvailable:
        # The batch stays pending; if these retries run out, emit sends it again.
        countdown = min(5.0, 0.2 * 2**self.request.retries)
        raise self.retry(countdown=countdown, max_retries=30) from None
    if lease is not None:
        sign.delay(lease.batch_id, lease.key_id, lease.token)


@app.task(name="signwave.sign", **RETRY)
def sign(batch_id: int, key_id: int, token: int) -> str:
    # A key freed by this batch is filled at once, without waiting for beat;
    # for SIGNWAVE_CHAIN_SECONDS, with a batch this task goes on to sign itself:
    # each batch so signed saves two messages and two transactions, and a warm
    # shutdown waits for the chain to end.
    return pipeline().sign_and_top_up(
        Lease(batch_id=BatchId(batch_id), key_id=KeyId(key_id), token=LeaseToken(token)),
        _dispatch,
    )


@worker_ready.connect
def _emit_when_ready(**_: Any) -> None:
    # A worker that joins starts work at once instead of at beat's next tick.
    emit.delay()
