"""Read-side queries for the home page."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Order, Product

ORDERS_SHOWN = 20


def active_products() -> list[Product]:
    return list(db.session.scalars(select(Product).where(Product.active.is_(True)).order_by(Product.position)))


def orders_of(shopper_id: str | None) -> list[Order]:
    """The shopper's most recent orders with their items, newest first (two queries, no N+1)."""
    if shopper_id is None:
        return []
    return list(
        db.session.scalars(
            select(Order)
            .where(Order.shopper_id == shopper_id)
            .options(selectinload(Order.items))
            .order_by(Order.created_at.desc(), Order.id.desc())
            .limit(ORDERS_SHOWN)
        )
    )
