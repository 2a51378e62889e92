"""counters of the embedded meters backend

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_counter',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('rr_counter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_counter_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rr_counter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_counter_expires_at'))

    op.drop_table('rr_counter')
