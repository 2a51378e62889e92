"""oauth refresh tokens: the newest (rotated) refresh token per target credential

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_oauth_refresh_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(), nullable=False),
    sa.Column('credential', sa.String(), nullable=False),
    sa.Column('seed_digest', sa.LargeBinary(), nullable=False),
    sa.Column('retired_seeds', sa.JSON(), nullable=False),
    sa.Column('token_enc', sa.LargeBinary(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('lease_holder', sa.String(), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('target', 'credential')
    )


def downgrade() -> None:
    op.drop_table('rr_oauth_refresh_token')
