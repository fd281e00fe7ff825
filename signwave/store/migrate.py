"""Create or upgrade the schema with Alembic; tell whether a database is ready."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from signwave.errors import DatabaseNotInitialised
from signwave.store.engine import Database


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "signwave:migrations")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(db: Database) -> tuple[str | None, str | None]:
    """Upgrade to the newest schema; return (revision before, revision after)."""
    config = _config()
    with db.write() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, head_revision()


def check_ready(db: Database) -> None:
    with db.read() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        raise DatabaseNotInitialised(
            f"the database at {db.shown_url} has no signwave schema: run `signwave db init`"
        )
    if current != head_revision():
        raise DatabaseNotInitialised(
            f"the database at {db.shown_url} has an older schema ({current}): "
            "run `signwave db init` to upgrade it"
        )
