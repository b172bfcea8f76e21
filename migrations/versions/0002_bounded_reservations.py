"""Bounded reservations: the client each order came from, and when a newer checkout superseded it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 17:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_key', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_orders_client_key'), ['client_key'], unique=False)


def downgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_client_key'))
        batch_op.drop_column('superseded_at')
        batch_op.drop_column('client_key')
