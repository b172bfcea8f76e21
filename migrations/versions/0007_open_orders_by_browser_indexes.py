"""A browser's open orders by partial indexes (unclaimed awaiting payment; processing); the index on status alone goes.

The checkout reads a browser's open orders twice: its delayed payment still processing (the
bounds) and its older sessions to claim. With statistics from before a crowd of open orders
arrived, PostgreSQL planned those lookups by status alone, by id or by public id, walking
every order awaiting payment, or every order, for each checkout.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


OPEN_UNCLAIMED = sa.text("status = 'awaiting_payment' AND superseded_at IS NULL")
PROCESSING = sa.text("status = 'processing'")


def upgrade():
    op.create_index(
        'ix_orders_shopper_open', 'orders', ['shopper_id', 'id'], unique=False,
        postgresql_where=OPEN_UNCLAIMED, sqlite_where=OPEN_UNCLAIMED,
    )
    op.create_index(
        'ix_orders_shopper_processing', 'orders', ['shopper_id', 'public_id'], unique=False,
        postgresql_where=PROCESSING, sqlite_where=PROCESSING,
    )
    op.drop_index('ix_orders_status', table_name='orders')


def downgrade():
    op.create_index('ix_orders_status', 'orders', ['status'], unique=False)
    op.drop_index('ix_orders_shopper_processing', table_name='orders')
    op.drop_index('ix_orders_shopper_open', table_name='orders')
