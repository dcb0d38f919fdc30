"""Persistence: SQLAlchemy models, Alembic migrations, the database handle."""

from llamastudio.store.db import Database

__all__ = ["Database"]
