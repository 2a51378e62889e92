"""control plane: data planes, admin tokens, reported usage

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa



revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_cp_admin',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('token_sha256', sa.String(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name'),
    sa.UniqueConstraint('token_sha256')
    )
    op.create_table('rr_cp_dataplane',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('cert_sha256', sa.String(), nullable=False),
    sa.Column('seal_public', sa.String(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name'),
    sa.UniqueConstraint('cert_sha256')
    )
    op.create_table('rr_cp_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ca_cert', sa.String(), nullable=False),
    sa.Column('ca_key_enc', sa.LargeBinary(), nullable=False),
    sa.Column('signing_key_enc', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('rr_cp_usage',
    sa.Column('scope', sa.String(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('dataplane', sa.String(), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'key')
    )
    with op.batch_alter_table('rr_cp_usage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_cp_usage_expires_at'), ['expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rr_cp_usage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_cp_usage_expires_at'))

    op.drop_table('rr_cp_usage')
    op.drop_table('rr_cp_state')
    op.drop_table('rr_cp_dataplane')
    op.drop_table('rr_cp_admin')
