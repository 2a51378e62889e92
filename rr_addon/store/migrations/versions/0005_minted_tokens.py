"""minted tokens: records for rr token list / revoke

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_minted_token',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('proxy', sa.String(), nullable=False),
    sa.Column('credential', sa.String(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('note', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rr_minted_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_minted_token_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rr_minted_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_minted_token_expires_at'))
    op.drop_table('rr_minted_token')
