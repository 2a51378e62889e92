"""audit trail and data-plane registry

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rr_audit',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_id', sa.String(), nullable=False),
    sa.Column('result', sa.String(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('code', sa.String(), nullable=True),
    sa.Column('reason', sa.String(), nullable=True),
    sa.Column('scope', sa.String(), nullable=True),
    sa.Column('rule', sa.String(), nullable=True),
    sa.Column('proxy', sa.String(), nullable=True),
    sa.Column('credential', sa.String(), nullable=True),
    sa.Column('channel', sa.String(), nullable=True),
    sa.Column('target', sa.String(), nullable=True),
    sa.Column('target_credential', sa.String(), nullable=True),
    sa.Column('method', sa.String(), nullable=True),
    sa.Column('scheme', sa.String(), nullable=True),
    sa.Column('host', sa.String(), nullable=True),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('path', sa.String(), nullable=True),
    sa.Column('client', sa.String(), nullable=True),
    sa.Column('bytes_in', sa.BigInteger(), nullable=True),
    sa.Column('bytes_out', sa.BigInteger(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('decision_ms', sa.Float(), nullable=True),
    sa.Column('config_version', sa.Integer(), nullable=True),
    sa.Column('dataplane', sa.String(), nullable=True),
    sa.Column('meters', sa.JSON(), nullable=True),
    sa.Column('redactions', sa.JSON(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_id')
    )
    with op.batch_alter_table('rr_audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_audit_ts'), ['ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_rr_audit_proxy'), ['proxy'], unique=False)
        batch_op.create_index(batch_op.f('ix_rr_audit_code'), ['code'], unique=False)

    op.create_table('rr_dataplane',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('hostname', sa.String(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('listen', sa.String(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('config_version', sa.Integer(), nullable=True),
    sa.Column('rr_version', sa.String(), nullable=True),
    sa.Column('stats', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rr_dataplane', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rr_dataplane_heartbeat_at'), ['heartbeat_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rr_dataplane', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_dataplane_heartbeat_at'))

    op.drop_table('rr_dataplane')
    with op.batch_alter_table('rr_audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rr_audit_code'))
        batch_op.drop_index(batch_op.f('ix_rr_audit_proxy'))
        batch_op.drop_index(batch_op.f('ix_rr_audit_ts'))

    op.drop_table('rr_audit')
