"""Redis over TLS (`rediss://`, SPEC §8): a run signs everything through a Redis that
speaks TLS only, and a certificate that cannot be trusted stops it with one line."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from signwave.settings import Settings
from tests.conftest import RedisServer
from tests.support import assert_all_signed_once, cli


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class TlsRedisServer(RedisServer):
    """A redis-server that listens with TLS only, its certificate signed by a private CA."""

    def __init__(self, workdir: Path) -> None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _certificate("signwave test CA", ca_key, "signwave test CA", ca_key, ca=True)
        server = _certificate("127.0.0.1", server_key, "signwave test CA", ca_key, ca=False)
        self.ca_file = _write_pem(workdir / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = _write_pem(
            workdir / "server.pem", server.public_bytes(serialization.Encoding.PEM)
        )
        self.key_file = _write_pem(
            workdir / "server.key",
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        super().__init__(workdir)

    @property
    def bare_url(self) -> str:
        """The URL without the CA: the certificate is then checked against the system CAs."""
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return f"{self.bare_url}?ssl_ca_certs={self.ca_file}"

    def listen_args(self) -> list[str]:
        return [
            "--port",
            "0",  # no plain-text port at all
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.cert_file),
            "--tls-key-file",
            str(self.key_file),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            "no",
        ]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("redis-tls"))
    yield server
    server.stop()


def test_a_run_signs_everything_through_redis_over_tls(
    tls_redis: TlsRedisServer, tmp_path: Path
) -> None:
    tls_redis.flush()
    database_url = f"sqlite:///{tmp_path / 'tls.db'}"
    # Given locks and broker on a Redis that speaks TLS only, its CA named in the URL
    settings = Settings(database_url=database_url, redis_url=tls_redis.url, lease_ttl=15)

    result = cli(
        settings, "run", "--workers", "2", "--batch-size", "100", "--records", "600", "--keys", "4"
    )

    # Then every record is signed and verified, through that Redis and no other:
    # the workers' queues were declared on it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "private redis-server" not in result.stderr
    assert "verify: all guarantees hold" in result.stdout
    assert_all_signed_once(database_url, 600)
    client = redis.Redis.from_url(tls_redis.url)
    assert client.exists("_kombu.binding.signing") and client.exists("_kombu.binding.signwave")
    client.close()


@pytest.mark.parametrize("which", ["SIGNWAVE_REDIS_URL", "SIGNWAVE_BROKER_URL"])
def test_an_untrusted_redis_certificate_stops_a_run(
    tls_redis: TlsRedisServer, tmp_path: Path, which: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'tls.db'}"
    # Given a URL without the private CA (the system CAs do not trust the
    # server): as the one Redis URL, broker included, or as the broker's only
    bare = tls_redis.bare_url.replace("rediss://", "rediss://:hunter2@")
    if which == "SIGNWAVE_REDIS_URL":
        settings = Settings(database_url=database_url, redis_url=bare)
    else:
        settings = Settings(database_url=database_url, redis_url=tls_redis.url, broker_url=bare)

    result = cli(settings, "run", "--records", "10", "--keys", "1")

    # Then the run stops on one line that says why and what to do, without the
    # password, and without falling back to a private Redis
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("signwave: error: TLS with Redis at rediss://:***@127.0.0.1:")
    assert "certificate" in lines[0]
    assert "ssl_ca_certs" in lines[0]
    assert "hunter2" not in result.stdout + result.stderr
