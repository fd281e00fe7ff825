"""Command definitions; each is a thin layer over the library."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from signwave import seeding
from signwave.cli import io_commands, output
from signwave.errors import DatabaseNotInitialised
from signwave.keycrypt import KeyCipher
from signwave.redact import redact_url
from signwave.settings import MAX_BATCH_SIZE, Settings, check_batch_size
from signwave.signing import MIN_KEY_BITS
from signwave.store import Store, open_database
from signwave.store.engine import Database, sqlite_file
from signwave.store.io import check_key_encryption
from signwave.store.migrate import check_ready, upgrade
from signwave.store.status import read_status
from signwave.verify import run_verify

CONTEXT = {"auto_envvar_prefix": "SIGNWAVE", "show_default": True, "max_content_width": 100}


class BatchSize(click.ParamType[int]):
    name = "INTEGER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"must be a positive integer, got {value!r}", param, ctx)
        try:
            return check_batch_size(number)
        except Exception as exc:  # ConfigError: re-raise as a usage error naming the flag
            self.fail(str(exc), param, ctx)


class AppContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def database(self, *, ready: bool = True) -> Database:
        """The configured database; with ``ready``, refuse one without the
        current schema (a missing SQLite file is reported, not created)."""
        url = self.settings.database_url
        path = sqlite_file(url)
        if ready and path is not None and not path.exists():
            raise DatabaseNotInitialised(
                f"there is no database at {redact_url(url)}: run `signwave db init` "
                "(or set SIGNWAVE_DATABASE_URL)"
            )
        db = open_database(url)
        if ready:
            check_ready(db)
        return db


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings=CONTEXT)
@click.option(
    "--database-url",
    envvar="SIGNWAVE_DATABASE_URL",
    show_envvar=True,
    default="sqlite:///signwave.db",
    help="SQLAlchemy URL of the database.",
)
@click.option(
    "--redis-url",
    envvar="SIGNWAVE_REDIS_URL",
    show_envvar=True,
    default="redis://localhost:6379/0",
    help="Redis for the key locks.",
)
@click.option(
    "--broker-url",
    envvar="SIGNWAVE_BROKER_URL",
    show_envvar=True,
    default="",
    show_default="the Redis URL",
    help="Celery broker.",
)
@click.version_option(package_name="signwave")
@click.pass_context
def cli(ctx: click.Context, database_url: str, redis_url: str, broker_url: str) -> None:
    """Sign every record in a database with a pool of RSA keys, on Celery."""
    ctx.obj = AppContext(
        Settings.from_env(database_url=database_url, redis_url=redis_url, broker_url=broker_url)
    )


@cli.group()
def db() -> None:
    """Manage the database schema."""


@db.command("init")
@pass_app
def db_init(app: AppContext) -> None:
    """Create or upgrade the schema (idempotent)."""
    database = app.database(ready=False)
    before, after = upgrade(database)
    if before == after:
        click.echo(f"database {database.shown_url} is up to date (schema {after})")
    else:
        click.echo(f"database {database.shown_url}: schema {before or 'none'} -> {after}")


@cli.command()
@click.option(
    "--records",
    type=click.IntRange(min=0),
    default=0,
    show_envvar=True,
    help="Random payloads to add.",
)
@click.option(
    "--keys",
    type=click.IntRange(min=0),
    default=0,
    show_envvar=True,
    help="New RSA keys to generate (on every core).",
)
@click.option(
    "--key-bits",
    type=click.IntRange(min=MIN_KEY_BITS, max=16384),
    default=MIN_KEY_BITS,
    show_envvar=True,
    help="Size of new keys.",
)
@pass_app
def seed(app: AppContext, records: int, keys: int, key_bits: int) -> None:
    """Add N random payloads and K new keys."""
    store = Store(app.database(), cipher=KeyCipher(app.settings.key_encryption_key))
    store.refuse_if_running()
    if keys:
        # New keys are sealed like the stored ones, or workers could open only some.
        check_key_encryption(store.db, store.cipher)
    seed_store(store, records, keys, key_bits)


def seed_store(store: Store, n_records: int, n_keys: int, key_bits: int = MIN_KEY_BITS) -> None:
    started = time.perf_counter()
    materials = seeding.generate_keys(n_keys, key_bits)
    key_ids, _ = store.add_keys(materials)
    keys_done = time.perf_counter()
    added = store.add_records(seeding.random_payloads(n_records))
    done = time.perf_counter()
    click.echo(
        f"added {len(key_ids)} keys ({key_bits} bits) in {keys_done - started:.1f} s "
        f"and {added} records in {done - keys_done:.1f} s"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, show_envvar=True, help="Machine-readable output.")
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Records, signed, batches by status, keys leased now, signatures per second."""
    result = read_status(app.database())
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
    else:
        output.print_status(result)


@cli.command()
@click.option("--json", "as_json", is_flag=True, show_envvar=True, help="Machine-readable output.")
@pass_app
def verify(app: AppContext, as_json: bool) -> None:
    """Check G1-G6 from the tables and verify every signature; exit 0 only if all hold."""
    report = run_verify(app.database())
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        output.print_report(report)
    if not report.ok:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option(
    "--batch-size",
    type=BatchSize(),
    envvar="SIGNWAVE_BATCH_SIZE",
    show_envvar=True,
    default=1000,
    help=f"Records per batch (1 to {MAX_BATCH_SIZE}).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    default=None,
    show_envvar=True,
    show_default="the number of CPUs + 1",
    help="Signing worker processes.",
)
@click.option(
    "--records",
    type=click.IntRange(min=0),
    default=100_000,
    show_envvar=True,
    help="Records to seed when the database has no keys yet.",
)
@click.option(
    "--keys",
    type=click.IntRange(min=1),
    default=100,
    show_envvar=True,
    help="Keys to seed when the database has no keys yet.",
)
@pass_app
def run(app: AppContext, batch_size: int, workers: int | None, records: int, keys: int) -> None:
    """Sign every record: start Celery workers and the emit schedule, show progress, verify."""
    from signwave.runner import Runner

    settings = Settings.from_env(
        database_url=app.settings.database_url,
        redis_url=app.settings.redis_url,
        broker_url=app.settings.broker_url,
        batch_size=batch_size,
    )
    database = app.database(ready=False)
    upgrade(database)
    store = Store(database, cipher=KeyCipher(settings.key_encryption_key))
    # Fail now, in one line, rather than in every worker: a wrong or missing
    # SIGNWAVE_KEY_ENCRYPTION_KEY would fail every batch.
    check_key_encryption(database, store.cipher)
    if not store.has_keys():
        click.echo(f"empty database: seeding {records} records and {keys} keys")
        seed_store(store, records, keys)
    ok = Runner(settings, database, workers=workers).run()
    if not ok:
        raise click.exceptions.Exit(1)


cli.add_command(io_commands.keys)
cli.add_command(io_commands.records)
cli.add_command(io_commands.export)
