"""Read-side queries for the home page."""
from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Order, Product

ORDERS_SHOWN = 20


def active_products() -> list[Product]:
    return list(db.session.scalars(select(Product).where(Product.active.is_(True)).order_by(Product.position)))


@dataclass(frozen=True)
class ProductCard:
    """What the home page shows of a product: plain data, safe to cache between requests."""

    slug: str
    name: str
    description: str
    image: str
    unit_amount: int
    stock: int
    max_quantity: int


def product_cards() -> list[ProductCard]:
    """The active products for display, cached per process for PRODUCT_CACHE_SECONDS."""
    cache = current_app.extensions.setdefault("product_cards", {"until": 0.0, "cards": []})
    now = time.monotonic()
    if cache["until"] <= now:
        cache["cards"] = [
            ProductCard(p.slug, p.name, p.description, p.image, p.unit_amount, p.stock, p.max_quantity)
            for p in active_products()
        ]
        cache["until"] = now + current_app.config["PRODUCT_CACHE_SECONDS"]
    return cache["cards"]


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
