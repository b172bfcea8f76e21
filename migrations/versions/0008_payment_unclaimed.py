"""The webhook's common case in one statement: the payment's lock, then a look that sees what committed meanwhile.

`shop_payment_unclaimed(payment, event)` takes the payment's advisory lock (the one
`orders.lock_payment` takes) and only then looks, with a snapshot of its own, for the event
and for a refund waiting for the payment. A statement's own snapshot is taken when it
starts, before any lock it waits for; a VOLATILE function's queries each take a new one.
See `shop.paid_sessions`. PostgreSQL only: SQLite serializes every writing transaction.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:10:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_context().dialect.name != 'postgresql':
        return
    # Sequential scans off until the transaction ends: the lookups' plans are kept per
    # connection, and one made while the events table was a page or two would read it whole.
    op.execute("""
        CREATE FUNCTION shop_payment_unclaimed(payment text, event text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended(payment, 0));
            PERFORM set_config('enable_seqscan', 'off', true);
            RETURN NOT EXISTS (SELECT FROM stripe_events WHERE id = event)
                AND NOT EXISTS (SELECT FROM stripe_events WHERE state = 'waiting' AND waiting_for = payment);
        END
        $$
    """)


def downgrade():
    if op.get_context().dialect.name != 'postgresql':
        return
    op.execute("DROP FUNCTION shop_payment_unclaimed(text, text)")
