"""Stripe events get a durable state (applied, not ours, waiting, failed); emails fit any length.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 17:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('stripe_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('waiting_for', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('payload', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('error', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('failures', sa.Integer(), server_default='0', nullable=False))
    # Rows written before this revision were all processed: those about no order were "ignored".
    op.execute(
        "UPDATE stripe_events SET state = CASE WHEN outcome LIKE 'ignored%' THEN 'not_ours' ELSE 'applied' END"
    )
    with op.batch_alter_table('stripe_events', schema=None) as batch_op:
        batch_op.alter_column('state', existing_type=sa.String(length=16), nullable=False)
        batch_op.create_index(batch_op.f('ix_stripe_events_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_stripe_events_waiting_for'), ['waiting_for'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.alter_column('customer_email', existing_type=sa.String(length=320), type_=sa.Text(), existing_nullable=True)


def downgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.alter_column('customer_email', existing_type=sa.Text(), type_=sa.String(length=320), existing_nullable=True)

    with op.batch_alter_table('stripe_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stripe_events_waiting_for'))
        batch_op.drop_index(batch_op.f('ix_stripe_events_state'))
        batch_op.drop_column('failures')
        batch_op.drop_column('error')
        batch_op.drop_column('payload')
        batch_op.drop_column('waiting_for')
        batch_op.drop_column('state')
