"""Settings from the environment (SPEC §6) and URLs shown without passwords (SPEC §8)."""

from __future__ import annotations

import dataclasses

import pytest

from signwave.errors import ConfigError
from signwave.redact import redact_url
from signwave.settings import MAX_BATCH_SIZE, Settings, env_name


def test_defaults_without_any_variable() -> None:
    s = Settings.from_env({})

    assert s == Settings()
    assert s.database_url == "sqlite:///signwave.db"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.broker == s.redis_url
    assert s.batch_size == 1000


def test_good_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "SIGNWAVE_DATABASE_URL": "postgresql://u@h/db",
            "SIGNWAVE_REDIS_URL": "redis://r:6380/1",
            "SIGNWAVE_BROKER_URL": "redis://b:6381/2",
            "SIGNWAVE_BATCH_SIZE": " 250 ",
            "SIGNWAVE_EMIT_INTERVAL": "0.25",
            "SIGNWAVE_LEASE_TTL": "7",
            "SIGNWAVE_MAX_IN_FLIGHT": "3",
            "SIGNWAVE_MAX_ATTEMPTS": "5",
            "OTHER_BATCH_SIZE": "1",
        }
    )

    assert s.database_url == "postgresql://u@h/db"
    assert s.broker == "redis://b:6381/2"
    assert s.batch_size == 250 and isinstance(s.batch_size, int)
    assert s.emit_interval == 0.25
    assert s.lease_ttl == 7.0 and isinstance(s.lease_ttl, float)
    assert s.in_flight_limit == 3
    assert s.max_attempts == 5
    assert s.redispatch_seconds == 7.0


def test_batch_size_limit_is_inclusive() -> None:
    assert Settings.from_env({"SIGNWAVE_BATCH_SIZE": str(MAX_BATCH_SIZE)}).batch_size == (
        MAX_BATCH_SIZE
    )
    assert Settings.from_env({"SIGNWAVE_BATCH_SIZE": "1"}).batch_size == 1


@pytest.mark.parametrize(
    "raw", ["0", "-1", "abc", "1.5", "1e3", "true", str(MAX_BATCH_SIZE + 1), "10 000"]
)
def test_bad_batch_size_from_the_environment(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SIGNWAVE_BATCH_SIZE": raw})
    message = info.value.message
    assert "\n" not in message
    assert "batch size" in message.lower() or "BATCH_SIZE" in message


@pytest.mark.parametrize("value", [0, -1, True, False, MAX_BATCH_SIZE + 1, 2.0, "10"])
def test_bad_batch_size_given_directly(value: object) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({}, batch_size=value)
    with pytest.raises(ConfigError):
        Settings(batch_size=value)  # type: ignore[arg-type]


def test_chains_last_two_seconds_unless_set() -> None:
    assert Settings.from_env({}).chain_seconds == 2.0
    assert Settings.from_env({"SIGNWAVE_CHAIN_SECONDS": "0"}).chain_seconds == 0.0
    assert Settings.from_env({"SIGNWAVE_CHAIN_SECONDS": "0.5"}).chain_seconds == 0.5


@pytest.mark.parametrize("raw", ["-1", "abc", "nan", "inf"])
def test_chain_seconds_must_be_zero_or_positive(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SIGNWAVE_CHAIN_SECONDS": raw})
    assert "SIGNWAVE_CHAIN_SECONDS" in info.value.message


@pytest.mark.parametrize("name", ["SIGNWAVE_EMIT_INTERVAL", "SIGNWAVE_LEASE_TTL"])
@pytest.mark.parametrize("raw", ["0", "-1", "-0.5", "abc", "nan", "inf"])
def test_intervals_must_be_positive_numbers(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: raw})
    assert name in info.value.message


def test_other_bad_values() -> None:
    with pytest.raises(ConfigError, match="SIGNWAVE_MAX_IN_FLIGHT"):
        Settings.from_env({"SIGNWAVE_MAX_IN_FLIGHT": "-1"})
    with pytest.raises(ConfigError, match="SIGNWAVE_MAX_ATTEMPTS"):
        Settings.from_env({"SIGNWAVE_MAX_ATTEMPTS": "0"})
    with pytest.raises(ConfigError, match="SIGNWAVE_DATABASE_URL"):
        Settings(database_url="")


def test_empty_variables_mean_the_default() -> None:
    assert Settings.from_env({"SIGNWAVE_BATCH_SIZE": "", "SIGNWAVE_LEASE_TTL": ""}) == Settings()


def test_overrides_win_over_the_environment() -> None:
    env = {"SIGNWAVE_BATCH_SIZE": "10", "SIGNWAVE_REDIS_URL": "redis://env/0"}

    s = Settings.from_env(env, batch_size=20, redis_url=None, lease_ttl=3.0)

    assert s.batch_size == 20
    assert s.redis_url == "redis://env/0", "a None override leaves the variable in charge"
    assert s.lease_ttl == 3.0


def test_every_setting_has_an_environment_twin() -> None:
    s = Settings(
        database_url="sqlite:////tmp/x.db",
        redis_url="redis://h:1/2",
        broker_url="redis://h:1/3",
        batch_size=17,
        emit_interval=0.5,
        lease_ttl=4.5,
        max_in_flight=6,
        max_attempts=2,
        redispatch_after=9.0,
        flower_basic_auth="u:p",
    )
    env = s.to_env()

    assert set(env) == {env_name(f.name) for f in dataclasses.fields(Settings)}
    assert all(name.startswith("SIGNWAVE_") for name in env)
    assert Settings.from_env(env) == s


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNWAVE_BATCH_SIZE", "42")

    assert Settings.from_env().batch_size == 42
    assert Settings.from_env({}).batch_size == 1000


def test_repr_hides_passwords_and_secrets() -> None:
    s = Settings(
        database_url="postgresql://u:db-s3cret@h/sw",
        redis_url="redis://:redis-s3cret@h:6379/0",
        broker_url="redis://:broker-s3cret@h:6379/1",
        batch_size=12,
        flower_basic_auth="admin:flower-s3cret",
    )

    shown = repr(s)

    assert "s3cret" not in shown
    assert "postgresql://u:***@h/sw" in shown
    assert "batch_size=12" in shown


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 5  # type: ignore[misc]


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            (
                "postgresql://user:s3cret@db.example:5432/sw",
                "postgresql://user:***@db.example:5432/sw",
            ),
            ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
            ("redis://u:s3cret@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
            ("postgresql://u:p@ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
            ("postgresql+psycopg://u:s3cret@h/db", "postgresql+psycopg://u:***@h/db"),
        ],
    )
    def test_passwords_are_hidden(self, url: str, shown: str) -> None:
        assert redact_url(url) == shown

    @pytest.mark.parametrize(
        "url",
        ["sqlite:///signwave.db", "redis://localhost:6379/0", "postgresql://user@h/db", ""],
    )
    def test_urls_without_password_are_unchanged(self, url: str) -> None:
        assert redact_url(url) == url

    @pytest.mark.parametrize(
        "url", ["redis://u:s3cret@host:port/0", "redis://u:s3cret@host:99999/0"]
    )
    def test_a_bad_port_still_hides_the_password(self, url: str) -> None:
        shown = redact_url(url)

        assert "s3cret" not in shown
        assert "host" in shown
