"""The Redis lock on a signing key: the fast lock beside the durable lease.

Owners are random per signing execution; only the owner renews or releases.
Losing Redis' data loses nothing that matters: the database lease decides who
may sign, and a missing lock is re-created by its rightful owner.
"""

from __future__ import annotations

import importlib.resources
import logging
import ssl
from typing import Protocol

import redis

from signwave.errors import RedisTLSError, RedisUnavailable
from signwave.ids import KeyId
from signwave.redact import redact_url

logger = logging.getLogger(__name__)

PREFIX = "signwave:key-lock:"


class KeyLock(Protocol):
    def acquire(self, key_id: KeyId, owner: str, ttl: float, *, force: bool = False) -> bool: ...
    def handover(self, key_id: KeyId, current: str, new: str, ttl: float) -> bool: ...
    def release(self, key_id: KeyId, owner: str) -> bool: ...
    def owner(self, key_id: KeyId) -> str | None: ...


def _script(name: str) -> str:
    return (importlib.resources.files("signwave") / "lua" / f"{name}.lua").read_text()


class RedisKeyLock:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(_script("acquire"))
        self._handover = client.register_script(_script("handover"))
        self._release = client.register_script(_script("release"))

    @classmethod
    def from_url(cls, url: str) -> RedisKeyLock:
        return cls(connect_redis(url))

    def acquire(self, key_id: KeyId, owner: str, ttl: float, *, force: bool = False) -> bool:
        """Take the lock; with ``force``, also from a previous owner (logged)."""
        previous = self._call(self._acquire, key_id, owner, _ms(ttl), "1" if force else "0")
        if previous is None:
            return True
        if force:
            logger.warning(
                "took over the Redis lock of key %s from a dead holder",
                key_id,
                extra={"action": "lock_takeover", "key_id": key_id},
            )
            return True
        return False

    def handover(self, key_id: KeyId, current: str, new: str, ttl: float) -> bool:
        return bool(self._call(self._handover, key_id, current, new, _ms(ttl)))

    def release(self, key_id: KeyId, owner: str) -> bool:
        return bool(self._call(self._release, key_id, owner))

    def owner(self, key_id: KeyId) -> str | None:
        try:
            value = self.client.get(PREFIX + str(key_id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(
                f"lost Redis while reading the lock of key {key_id}: {exc}"
            ) from None
        return value.decode() if isinstance(value, bytes) else value

    def _call(self, script: object, key_id: KeyId, *args: object) -> object:
        try:
            result = script(keys=[PREFIX + str(key_id)], args=list(args))  # type: ignore[operator]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"lost Redis while locking key {key_id}: {exc}") from None
        return result.decode() if isinstance(result, bytes) else result


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def connect_redis(url: str) -> redis.Redis:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    except ValueError as exc:
        raise RedisUnavailable(f"invalid Redis URL {redact_url(url)}: {exc}") from None


def ping_redis(url: str) -> None:
    """Raise `RedisUnavailable` naming the URL (without its password) if Redis
    does not answer, and `RedisTLSError` if TLS with it fails (an untrusted
    certificate, most often): that is no reason to use another Redis."""
    try:
        connect_redis(url).ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        tls = _tls_failure(exc)
        if tls is not None:
            raise RedisTLSError(
                f"TLS with Redis at {redact_url(url)} failed ({tls}): if its certificate "
                "comes from a private CA, add ?ssl_ca_certs=/path/to/ca.pem to the URL"
            ) from None
        raise RedisUnavailable(
            f"cannot reach Redis at {redact_url(url)}: start one (`redis-server`) "
            "or set SIGNWAVE_REDIS_URL"
        ) from None


def _tls_failure(exc: BaseException) -> str | None:
    """What the TLS layer said, if ``exc`` comes from it (redis-py raises its
    ConnectionError while handling the `ssl.SSLError`)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
            return str(cause.verify_message)
        if isinstance(cause, ssl.SSLError):
            return str(cause.reason or cause)
        cause = cause.__cause__ or cause.__context__
    return None
