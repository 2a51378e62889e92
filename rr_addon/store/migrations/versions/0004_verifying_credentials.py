"""proxy credentials that verify tokens keep an encrypted secret instead of a digest

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rr_proxy_credential', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secret_enc', sa.LargeBinary(), nullable=True))
        batch_op.alter_column('secret_digest', existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM rr_proxy_credential WHERE secret_digest IS NULL")
    with op.batch_alter_table('rr_proxy_credential', schema=None) as batch_op:
        batch_op.alter_column('secret_digest', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column('secret_enc')
