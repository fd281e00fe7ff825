"""The one settings object, built once from the environment.

No other module reads ``os.environ``: everything configurable lives here, with
its ``SIGNWAVE_*`` variable, its default and its validation.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from signwave.errors import ConfigError
from signwave.keycrypt import check_key
from signwave.redact import redact_url

MAX_BATCH_SIZE = 100_000
DEFAULT_DATABASE_URL = "sqlite:///signwave.db"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def signing_processes() -> int:
    """Worker processes to start by default: one more than the CPUs. Each
    batch waits on the database, Redis and the broker between its bursts of
    signing; the extra process signs meanwhile, so that no core idles (at
    batches of 100 on PostgreSQL: CPU idle 13 % -> 8 %, about 18 % more records/s)."""
    return (os.cpu_count() or 1) + 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = ""
    """Celery broker; empty means the Redis URL."""
    batch_size: int = 1000
    emit_interval: float = 1.0
    """Seconds between two emits sent by celery beat."""
    lease_ttl: float = 30.0
    """Seconds a key lease lives without renewal."""
    max_in_flight: int = 0
    """Batches claimed but not yet signed; 0 means twice `signing_processes()`."""
    max_attempts: int = 3
    """Failed signing attempts after which a batch is marked failed."""
    redispatch_after: float = 0.0
    """Seconds after which a pending batch's ingest is sent again; 0 means the lease TTL."""
    chain_seconds: float = 2.0
    """Seconds a sign task goes on signing the batches its commits lease to it; 0: never."""
    flower_basic_auth: str = dataclasses.field(default="", repr=False)
    """``user:password[,user2:password2]`` Flower asks for; empty means no auth."""
    key_encryption_key: str = dataclasses.field(default="", repr=False)
    """Fernet key that encrypts private keys at rest; empty means plaintext."""

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        _positive("SIGNWAVE_EMIT_INTERVAL", self.emit_interval)
        _positive("SIGNWAVE_LEASE_TTL", self.lease_ttl)
        _positive("SIGNWAVE_MAX_ATTEMPTS", self.max_attempts)
        if not (self.chain_seconds >= 0 and math.isfinite(self.chain_seconds)):
            raise ConfigError(
                f"SIGNWAVE_CHAIN_SECONDS must be 0 (no chains) or a positive, finite number, "
                f"got {self.chain_seconds!r}"
            )
        if self.max_in_flight < 0:
            raise ConfigError("SIGNWAVE_MAX_IN_FLIGHT must be 0 (automatic) or a positive integer")
        if not self.database_url:
            raise ConfigError("SIGNWAVE_DATABASE_URL is empty: give a SQLAlchemy database URL")
        if self.key_encryption_key:
            check_key(self.key_encryption_key)
        if self.flower_basic_auth:
            _check_basic_auth(self.flower_basic_auth)

    def __repr__(self) -> str:
        # URLs may carry passwords (SPEC §8): a logged or raised Settings shows them redacted.
        shown = []
        for field in dataclasses.fields(self):
            if field.repr:
                value = getattr(self, field.name)
                if field.name.endswith("_url"):
                    value = redact_url(value)
                shown.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def in_flight_limit(self) -> int:
        return self.max_in_flight or 2 * signing_processes()

    @property
    def redispatch_seconds(self) -> float:
        return self.redispatch_after or self.lease_ttl

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``SIGNWAVE_*`` variables; keyword overrides (from CLI flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = env_name(field.name)
            if name in env and env[name] != "":
                values[field.name] = _parse(name, env[name], field.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that give a child process these same settings."""
        return {env_name(f.name): str(getattr(self, f.name)) for f in dataclasses.fields(self)}


def env_name(field: str) -> str:
    return f"SIGNWAVE_{field.upper()}"


def check_batch_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"batch size must be a positive integer, got {value!r}: "
            "set --batch-size or SIGNWAVE_BATCH_SIZE"
        )
    if value > MAX_BATCH_SIZE:
        raise ConfigError(
            f"batch size {value} is too large: use at most {MAX_BATCH_SIZE} "
            "(--batch-size or SIGNWAVE_BATCH_SIZE)"
        )
    return value


def _check_basic_auth(value: str) -> None:
    for credential in value.split(","):
        user, colon, password = credential.partition(":")
        if not (user and colon and password):
            raise ConfigError(
                "SIGNWAVE_FLOWER_BASIC_AUTH must be user:password (several separated by commas)"
            )


def _positive(name: str, value: float) -> None:
    # "inf" parses as a float, but a lease or interval must become a timedelta.
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive, finite number, got {value!r}")


def _parse(name: str, raw: str, kind: object) -> Any:
    if kind in (int, "int"):
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if kind in (float, "float"):
        try:
            return float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    return raw
