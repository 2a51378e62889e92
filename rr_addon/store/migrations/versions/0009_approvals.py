"""approvals: requests held until a person decides (rr approvals / approve / deny)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_approval',
    sa.Column('request_id', sa.String(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('dataplane', sa.String(), nullable=False),
    sa.Column('proxy', sa.String(), nullable=False),
    sa.Column('credential', sa.String(), nullable=False),
    sa.Column('target', sa.String(), nullable=True),
    sa.Column('target_credential', sa.String(), nullable=True),
    sa.Column('method', sa.String(), nullable=False),
    sa.Column('url', sa.String(), nullable=False),
    sa.Column('scope', sa.String(), nullable=False),
    sa.Column('rule', sa.String(), nullable=False),
    sa.Column('body_preview', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sa.String(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('request_id')
    )
    with op.batch_alter_table('rr_approval', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_approval_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_rr_approval_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rr_approval', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_approval_expires_at'))
        batch_op.drop_index(batch_op.f('ix_rr_approval_state'))
    op.drop_table('rr_approval')
