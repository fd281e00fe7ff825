"""Redis URLs: passwords never shown, `rediss://` (TLS) accepted by the lock and the broker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from signwave.errors import RedisUnavailable
from signwave.lock import RedisKeyLock, ping_redis
from signwave.redact import redact_url
from tests.support import ROOT

TLS_URL = "rediss://:s3cret@cache.example:6380/2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (TLS_URL, "rediss://:***@cache.example:6380/2"),
        ("rediss://user:s3cret@h:6380/0?ssl_cert_reqs=required", "rediss://user:***@h:6380/0?ssl_cert_reqs=required"),
        ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1"),
        ("redis://u:s3cret@h/0?password=s3cret", "redis://u:***@h/0?password=***"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)  # fmt: skip
def test_redis_passwords_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_the_lock_client_speaks_tls_for_rediss() -> None:
    lock = RedisKeyLock.from_url(TLS_URL)
    kwargs = lock.client.connection_pool.connection_kwargs

    assert issubclass(lock.client.connection_pool.connection_class, redis.SSLConnection)
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)
    assert kwargs["password"] == "s3cret"
    lock.client.close()


def test_an_unreachable_redis_is_named_without_its_password() -> None:
    with pytest.raises(RedisUnavailable) as caught:
        ping_redis("redis://:s3cret@127.0.0.1:1/0")

    assert "redis://:***@127.0.0.1:1/0" in caught.value.message
    assert "s3cret" not in caught.value.message


@pytest.mark.parametrize(
    ("url", "cert_reqs"),
    [(TLS_URL, "CERT_REQUIRED"), (TLS_URL + "?ssl_cert_reqs=none", "CERT_NONE")],
)
def test_the_broker_config_accepts_rediss_and_checks_certificates(url: str, cert_reqs: str) -> None:
    # celeryconfig reads the environment once per process: a process of its own.
    probe = (
        "import json; from signwave.celery import app; c = app.connection_for_write(); "
        "print(json.dumps([c.transport_cls, c.hostname, c.port, c.ssl['ssl_cert_reqs'].name, "
        "c.as_uri()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"SIGNWAVE_BROKER_URL": url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    transport, host, port, reqs, shown = json.loads(out.stdout)

    assert (transport, host, port) == ("rediss", "cache.example", 6380)
    assert reqs == cert_reqs
    assert "s3cret" not in shown
