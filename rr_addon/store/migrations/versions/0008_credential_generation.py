"""proxy credentials get a generation that minted tokens are bound to

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rr_proxy_credential', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generation', sa.String(), nullable=True))
    # every existing credential starts a generation: tokens minted before carry none and stop working
    conn = op.get_bind()
    table = sa.table('rr_proxy_credential', sa.column('id', sa.Integer), sa.column('generation', sa.String))
    for (row_id,) in conn.execute(sa.select(table.c.id)).all():
        conn.execute(table.update().where(table.c.id == row_id).values(generation=secrets.token_hex(8)))


def downgrade() -> None:
    with op.batch_alter_table('rr_proxy_credential', schema=None) as batch_op:
        batch_op.drop_column('generation')
