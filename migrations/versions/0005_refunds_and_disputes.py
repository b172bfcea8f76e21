"""Refunds and disputes as records of their own; what an order's refunds add up to.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'refunds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('stripe_refund_id', sa.String(length=255), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('payment_intent_id', sa.String(length=255), nullable=False),
        sa.Column('amount', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('reason', sa.String(length=64), nullable=True),
        sa.Column('failure_reason', sa.String(length=64), nullable=True),
        sa.Column('stripe_created', sa.Integer(), nullable=False),
        sa.Column('as_of', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_refunds_order_id_orders'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds')),
        sa.UniqueConstraint('stripe_refund_id', name=op.f('uq_refunds_stripe_refund_id')),
    )
    op.create_index(op.f('ix_refunds_order_id'), 'refunds', ['order_id'], unique=False)
    op.create_table(
        'disputes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('stripe_dispute_id', sa.String(length=255), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('payment_intent_id', sa.String(length=255), nullable=False),
        sa.Column('charge_id', sa.String(length=255), nullable=True),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.String(length=64), nullable=False),
        sa.Column('amount', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('due_by', sa.Integer(), nullable=True),
        sa.Column('is_charge_refundable', sa.Boolean(), nullable=False),
        sa.Column('livemode', sa.Boolean(), nullable=False),
        sa.Column('amount_withdrawn', sa.Integer(), nullable=False),
        sa.Column('fee_withdrawn', sa.Integer(), nullable=False),
        sa.Column('amount_reinstated', sa.Integer(), nullable=False),
        sa.Column('fee_reinstated', sa.Integer(), nullable=False),
        sa.Column('stripe_created', sa.Integer(), nullable=False),
        sa.Column('as_of', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_disputes_order_id_orders'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_disputes')),
        sa.UniqueConstraint('stripe_dispute_id', name=op.f('uq_disputes_stripe_dispute_id')),
    )
    op.create_index(op.f('ix_disputes_order_id'), 'disputes', ['order_id'], unique=False)
    op.create_index(op.f('ix_disputes_status'), 'disputes', ['status'], unique=False)
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('amount_refund_pending', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('charge_amount_refunded', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('charge_refunded_as_of', sa.Integer(), nullable=True))
    # Until now an order's refunded amount was the charge's total, as the newest charge.refunded said.
    op.execute("UPDATE orders SET charge_amount_refunded = amount_refunded WHERE amount_refunded > 0")


def downgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('charge_refunded_as_of')
        batch_op.drop_column('charge_amount_refunded')
        batch_op.drop_column('amount_refund_pending')
    op.drop_index(op.f('ix_disputes_status'), table_name='disputes')
    op.drop_index(op.f('ix_disputes_order_id'), table_name='disputes')
    op.drop_table('disputes')
    op.drop_index(op.f('ix_refunds_order_id'), table_name='refunds')
    op.drop_table('refunds')
