"""Alembic environment: runs on the engine rr hands over (see store/db.py)."""

from alembic import context
from sqlmodel import SQLModel

import rr_addon.store.tables  # noqa: F401  (every table: registers them on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations_online()
