"""Alembic environment: runs on the engine rr hands over (see store/db.py)."""

from alembic import context
from sqlmodel import SQLModel

import rr_addon.counters.tables  # noqa: F401  (rr_counter)
import rr_addon.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
import rr_addon.store.audit_store  # noqa: F401  (rr_audit, migration 0003)
import rr_addon.store.dataplanes  # noqa: F401  (rr_dataplane, migration 0003)
import rr_addon.hybrid.registry  # noqa: F401  (rr_cp_*, migration 0007)
import rr_addon.store.approvals  # noqa: F401  (rr_approval, migration 0009)

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
