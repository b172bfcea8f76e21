"""Bounded reservations: how much unpaid stock one client may hold.

Starting a checkout reserves stock until its session expires, so without a bound one script could
hold the whole catalogue and show every shopper "sold out". Two bounds apply:

- One browser holds one open checkout: starting a new one asks Stripe to expire the
  browser's earlier open sessions. Their stock comes back when Stripe's
  `checkout.session.expired` event arrives, as for any expired session.
- One client address holds at most `CHECKOUT_STOCK_SHARE` of each product's units in unpaid
  checkouts (of what is in stock plus what it already holds), but always at least one full
  cart. Fresh cookies don't reset this bound; only paying or letting go does.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math

from flask import current_app
from sqlalchemy import func, select

from . import orders, stripe_gateway
from .extensions import db
from .models import Order, OrderItem, Product
from .orders import OrderStatus, OutOfStock

log = logging.getLogger("shop.reservations")

# Orders that hold stock nobody has paid for yet.
UNPAID_HOLDS = (OrderStatus.PENDING, OrderStatus.AWAITING_PAYMENT)


class ShareExceeded(OutOfStock):
    """This client already holds its share of a product; the message is for the shopper."""


def client_key(address: str | None) -> str:
    """A keyed hash of the client's IP address: comparable, but no address is stored."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, (address or "unknown").encode(), hashlib.sha256).hexdigest()[:32]


def share_bound(in_stock: int, held: int, share: float, full_cart: int) -> int:
    """Most units of one product one client may hold: a share of what it could reach, at least a full cart."""
    return max(full_cart, math.floor(share * (in_stock + held)))


def check_client_share(order: Order, share: float, full_cart: int) -> None:
    """Raise ShareExceeded if this new order takes its client past the bound on any product.

    The `check_bounds` of orders.place_order: it runs once the order's stock is reserved,
    while the products' rows are locked, so concurrent checkouts of the same products count
    each other here, and raising undoes the order and its reservation.
    """
    held = db.session.execute(
        select(Product.id, Product.name, Product.stock, func.sum(OrderItem.quantity))
        .join(OrderItem, OrderItem.product_id == Product.id)
        .join(Order, Order.id == OrderItem.order_id)
        .where(
            Order.client_key == order.client_key,
            Order.status.in_(UNPAID_HOLDS),
            Product.id.in_([item.product_id for item in order.items]),
        )
        .group_by(Product.id, Product.name, Product.stock)
        .order_by(Product.id)
    ).all()
    asked = {item.product_id: item.quantity for item in order.items}
    for product_id, name, in_stock, units in held:
        bound = share_bound(in_stock, units, share, full_cart)
        if units > bound:
            already = units - asked[product_id]
            raise ShareExceeded(
                f"Sorry, one shopper can hold at most {bound} × {name} in unpaid checkouts at a time, "
                f"and {already} are already waiting for payment from your connection. "
                "Finish or cancel those checkouts first."
            )


def expire_earlier_checkouts(order: Order) -> None:
    """Keep one open checkout per browser: ask Stripe to expire the browser's earlier sessions.

    The claim is committed before Stripe is called. If Stripe can't be reached, the session
    still expires on its own, at its `expires_at`.
    """
    session_ids = orders.supersede_earlier_checkouts(order)
    db.session.commit()
    for session_id in session_ids:
        try:
            stripe_gateway.expire_checkout_session(session_id)
        except stripe_gateway.PaymentProviderError as exc:
            log.warning("could not expire superseded session %s (it expires on its own): %s", session_id, exc)
        else:
            log.info("expired session %s: its browser started a newer checkout", session_id)
