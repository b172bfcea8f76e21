"""A browser's unclaimed orders awaiting payment, by a partial index; the index on status alone goes.

The checkout's claim of a browser's older sessions reads them by this index. The index on
status alone was what PostgreSQL chose instead, with statistics from before a crowd of open
orders arrived: it walked every order awaiting payment for each checkout.

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


def upgrade():
    op.create_index(
        'ix_orders_shopper_open', 'orders', ['shopper_id', 'id'], unique=False,
        postgresql_where=OPEN_UNCLAIMED, sqlite_where=OPEN_UNCLAIMED,
    )
    op.drop_index('ix_orders_status', table_name='orders')


def downgrade():
    op.create_index('ix_orders_status', 'orders', ['status'], unique=False)
    op.drop_index('ix_orders_shopper_open', table_name='orders')
