"""Orders keep what the customer saw and paid under Adaptive Pricing: amount and currency.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('presentment_amount', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('presentment_currency', sa.String(length=3), nullable=True))


def downgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('presentment_currency')
        batch_op.drop_column('presentment_amount')
