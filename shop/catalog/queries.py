"""Read-side queries for the home page."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select

from .. import fulfilment, stripe_gateway
from ..models import Order, OrderItem, Product, Shipment, max_quantity, utcnow
from ..orders import OrderStatus
from ..reads import read_rows

ORDERS_SHOWN = 20


@dataclass(frozen=True)
class ProductCard:
    """What the home page shows of a product, and what the checkout prices it at: plain data,
    safe to cache between requests."""

    id: int
    slug: str
    name: str
    description: str
    image: str
    unit_amount: int
    stock: int
    max_quantity: int


ACTIVE_PRODUCT_CARDS = (
    select(Product.id, Product.slug, Product.name, Product.description, Product.image, Product.unit_amount, Product.stock)
    .where(Product.active.is_(True))
    .order_by(Product.position)
)


def product_cards() -> list[ProductCard]:
    """The active products, cached per process for PRODUCT_CACHE_SECONDS.

    The checkout prices a cart from these too, so a shopper pays what the page showed; a new
    price or a product taken off sale applies to checkouts within PRODUCT_CACHE_SECONDS.
    Stock is only shown from here: the checkout reserves it in the database.
    """
    cache = current_app.extensions.setdefault("product_cards", {"until": 0.0, "cards": []})
    now = time.monotonic()
    if cache["until"] <= now:
        cache["cards"] = [ProductCard(*row, max_quantity=max_quantity(row.stock)) for row in read_rows(ACTIVE_PRODUCT_CARDS)]
        cache["until"] = now + current_app.config["PRODUCT_CACHE_SECONDS"]
    return cache["cards"]


@dataclass(frozen=True)
class OrderLine:
    product_name: str
    quantity: int
    unit_amount: int

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_amount


@dataclass(frozen=True)
class OrderSummary:
    """An order as the shopper's list shows it."""

    public_id: str
    status: str
    currency: str
    amount_total: int
    amount_refunded: int  # refunds that succeeded or are on their way, never one that failed
    amount_refund_pending: int  # the part still on its way
    created_at: datetime
    paid_at: datetime | None
    items: list[OrderLine] = field(default_factory=list)
    # The payment page, while the order can still be paid there; otherwise None.
    resume_url: str | None = None
    # None: the checkout never reached Stripe (see status_words.never_started).
    stripe_session_id: str | None = None
    shipment: ShipmentSummary | None = None


@dataclass(frozen=True)
class ShipmentSummary:
    """The parcel as the shopper's list shows it: the carrier, the number and its tracking page."""

    carrier: str
    tracking_number: str
    shipped_at: datetime
    tracking_url: str | None


_RECENT_ORDER_IDS = (
    select(Order.id)
    .where(Order.shopper_id == bindparam("shopper_id"))
    .order_by(Order.created_at.desc(), Order.id.desc())
    .limit(ORDERS_SHOWN)
)
RECENT_ORDERS_WITH_ITEMS = (
    select(
        Order.id,
        Order.public_id,
        Order.status,
        Order.currency,
        Order.amount_total,
        Order.amount_refunded,
        Order.amount_refund_pending,
        Order.created_at,
        Order.paid_at,
        Order.checkout_url,
        Order.superseded_at,
        Order.stripe_session_id,
        OrderItem.product_name,
        OrderItem.quantity,
        OrderItem.unit_amount,
        Shipment.carrier,
        Shipment.tracking_number,
        Shipment.shipped_at,
    )
    .join(OrderItem, OrderItem.order_id == Order.id)
    .outerjoin(Shipment, Shipment.order_id == Order.id)
    .where(Order.id.in_(_RECENT_ORDER_IDS.scalar_subquery()))
    .order_by(Order.created_at.desc(), Order.id.desc(), OrderItem.id)
)


def orders_of(shopper_id: str | None) -> list[OrderSummary]:
    """The shopper's most recent orders with their items, newest first, in one round trip."""
    if shopper_id is None:
        return []
    # The order's Checkout Session can be paid until its `expires_at`, fixed from the order's creation.
    payable_since = utcnow() - stripe_gateway.checkout_session_lifetime()
    orders: dict[int, OrderSummary] = {}
    for row in read_rows(RECENT_ORDERS_WITH_ITEMS, {"shopper_id": shopper_id}):
        summary = orders.get(row.id)
        if summary is None:
            # A superseded session was just asked to expire: it is not offered, even before Stripe's event.
            payable = (
                row.status == OrderStatus.AWAITING_PAYMENT
                and row.superseded_at is None
                and row.created_at > payable_since
            )
            summary = orders[row.id] = OrderSummary(
                *row[1:9],
                resume_url=row.checkout_url if payable else None,
                stripe_session_id=row.stripe_session_id,
                shipment=_shipment_of(row),
            )
        summary.items.append(OrderLine(row.product_name, row.quantity, row.unit_amount))
    return list(orders.values())


def _shipment_of(row: Any) -> ShipmentSummary | None:
    if row.carrier is None:
        return None
    url = fulfilment.tracking_url(row.carrier, row.tracking_number)
    return ShipmentSummary(row.carrier, row.tracking_number, row.shipped_at, url)
