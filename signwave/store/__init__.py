"""The storage layer: the only code that speaks SQL."""

from signwave.store.engine import Database, open_database
from signwave.store.store import Store

__all__ = ["Database", "Store", "open_database"]
