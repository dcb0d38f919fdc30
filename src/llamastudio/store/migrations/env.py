"""Alembic environment: the engine is handed in by ``store.db.alembic_config``."""

from alembic import context

from llamastudio.store.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
