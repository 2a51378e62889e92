"""control plane: usage resets for hybrid data planes (rr usage reset reaches them)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_cp_usage_reset',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.String(length=64), nullable=False),
    sa.Column('prefixes', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uid')
    )
    with op.batch_alter_table('rr_cp_usage_reset', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_cp_usage_reset_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rr_cp_usage_reset', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_cp_usage_reset_created_at'))
    op.drop_table('rr_cp_usage_reset')
