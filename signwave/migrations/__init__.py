"""Alembic migrations: `signwave db init` upgrades any database to the newest schema."""
