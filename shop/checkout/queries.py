"""The order status read, the endpoint the success page polls."""
from __future__ import annotations

from sqlalchemy import Row, bindparam, select

from ..models import Order
from ..reads import read_rows

STATUS_OF_ORDER = select(
    Order.id,
    Order.shopper_id,
    Order.stripe_session_id,
    Order.status,
    Order.updated_at,
    Order.paid_at,
    Order.amount_total,
    Order.currency,
).where(Order.public_id == bindparam("public_id"))


def order_status(public_id: str) -> Row | None:
    """Just the columns the status answer needs, in one round trip."""
    rows = read_rows(STATUS_OF_ORDER, {"public_id": public_id})
    return rows[0] if rows else None
