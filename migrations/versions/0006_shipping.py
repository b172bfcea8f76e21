"""Shipping: the address an order's parcel goes to, and the shipment the operator recorded.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 20:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'shipping_addresses',
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.Text(), nullable=True),
        sa.Column('phone', sa.Text(), nullable=True),
        sa.Column('line1', sa.Text(), nullable=True),
        sa.Column('line2', sa.Text(), nullable=True),
        sa.Column('city', sa.Text(), nullable=True),
        sa.Column('state', sa.Text(), nullable=True),
        sa.Column('postal_code', sa.Text(), nullable=True),
        sa.Column('country', sa.String(length=2), nullable=False),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('order_id'),
    )
    op.create_table(
        'shipments',
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('carrier', sa.String(length=40), nullable=False),
        sa.Column('tracking_number', sa.String(length=100), nullable=False),
        sa.Column('shipped_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('shipped_by', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('order_id'),
    )
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipments_shipped_at'), ['shipped_at'], unique=False)


def downgrade():
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shipments_shipped_at'))
    op.drop_table('shipments')
    op.drop_table('shipping_addresses')
