"""The order status read, the endpoint the success page polls."""
from __future__ import annotations

from sqlalchemy import Row, select

from ..extensions import db
from ..models import Order


def order_status(public_id: str) -> Row | None:
    """Just the columns the status answer needs, read outside a transaction (one round trip)."""
    query = select(
        Order.id,
        Order.shopper_id,
        Order.stripe_session_id,
        Order.status,
        Order.updated_at,
        Order.paid_at,
        Order.amount_total,
        Order.currency,
    ).where(Order.public_id == public_id)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return connection.execute(query).one_or_none()
