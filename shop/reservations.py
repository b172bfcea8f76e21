"""Bounded reservations: how much unpaid stock one client may hold.

Starting a checkout reserves stock until its session expires, so without a bound one script could
hold the whole catalogue and show every shopper "sold out". Two bounds apply:

- One browser holds one open checkout: starting a new one asks Stripe to expire the
  browser's older open sessions (never a newer one: two tabs end with the newer payable).
  Their stock comes back when Stripe's `checkout.session.expired` event arrives, as for any
  expired session. A delayed payment still processing (a bank transfer, unpaid for days)
  can't be expired, so while one is open the browser can't start another checkout.
- One client address holds at most `CHECKOUT_STOCK_SHARE` of each product's units in unpaid
  checkouts (of what is in stock plus what it already holds), but always at least one full
  cart. Every unpaid hold counts, processing delayed payments too. Fresh cookies don't reset
  this bound; only paying or letting go does.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math

from flask import current_app
from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import aliased

from . import placing, stripe_gateway
from .models import Order, OrderItem, Product, processing
from .orders import OrderStatus, OutOfStock

log = logging.getLogger("shop.reservations")

# Orders that hold stock nobody has paid for yet, delayed payments still processing included.
UNPAID_HOLDS = (OrderStatus.PENDING, OrderStatus.AWAITING_PAYMENT, OrderStatus.PROCESSING)


class ShareExceeded(OutOfStock):
    """This client already holds its share of a product; the message is for the shopper."""


class PaymentStillProcessing(Exception):
    """The browser's earlier delayed payment is still open; the message is for the shopper."""


def client_key(address: str | None) -> str:
    """A keyed hash of the client's IP address: comparable, but no address is stored."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, (address or "unknown").encode(), hashlib.sha256).hexdigest()[:32]


def share_bound(in_stock: int, held: int, share: float, full_cart: int) -> int:
    """Most units of one product one client may hold: a share of what it could reach, at least a full cart."""
    return max(full_cart, math.floor(share * (in_stock + held)))


_processing = aliased(Order)
# What one client address holds of each product in unpaid checkouts, with the browser's open
# delayed payment if it has one (on every row).
CLIENT_HOLDS = (
    select(
        Product.id,
        Product.name,
        Product.stock,
        func.sum(OrderItem.quantity),
        # Through the partial index of processing orders (`models.processing`): otherwise a plan may read the orders in public id order hoping to stop at
        # the first match, and a browser without a processing payment (nearly every one)
        # has none, so it would read them all.
        select(func.min(_processing.public_id))
        .where(_processing.shopper_id == bindparam("shopper_id"), processing(_processing))
        .scalar_subquery(),
    )
    .join(OrderItem, OrderItem.product_id == Product.id)
    .join(Order, Order.id == OrderItem.order_id)
    .where(Order.client_key == bindparam("client_key"), or_(*(Order.status == status for status in UNPAID_HOLDS)))
    .group_by(Product.id, Product.name, Product.stock)
    .order_by(Product.id)
)


# One client's checkouts take turns (to the end of each transaction), whatever they buy. Seed 1:
# other keys than the payments' locks (orders.lock_payment, seed 0).
CLIENT_LOCK = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("client_key"), 1)))


def client_bounds(share: float, full_cart: int) -> placing.Bounds:
    """The `bounds` of placing.place_order for a new order: ShareExceeded or PaymentStillProcessing.

    CLIENT_HOLDS runs after the order is in and before its stock is taken, under the client's
    lock, so concurrent checkouts of the same client count each other; raising undoes the order.
    """
    return placing.Bounds(
        lock=CLIENT_LOCK,
        query=CLIENT_HOLDS,
        parameters=lambda order: {"client_key": order.client_key, "shopper_id": order.shopper_id},
        check=lambda order, holds: _check_holds(order, holds, share, full_cart),
    )


def _check_holds(order: Order, holds: list[tuple], share: float, full_cart: int) -> None:
    open_delayed_payment = holds[0][4] if holds else None
    if open_delayed_payment is not None:
        raise PaymentStillProcessing(
            f"Your bank transfer for order {open_delayed_payment} is still being confirmed, and this browser can hold "
            "one open checkout at a time. You can start a new one once that payment clears or fails "
            "(Your orders shows when). Nothing was charged for this one."
        )
    asked = {item.product_id: item.quantity for item in order.items}
    for product_id, name, stock, units, _ in holds:
        if product_id not in asked:
            continue
        in_stock = stock - asked[product_id]  # once this order's units are taken
        if in_stock < 0:
            continue  # not enough units: taking them fails, and the shopper is told so
        bound = share_bound(in_stock, units, share, full_cart)
        if units > bound:
            already = units - asked[product_id]
            raise ShareExceeded(
                f"Sorry, one shopper can hold at most {bound} × {name} in unpaid checkouts at a time, "
                f"and {already} are already waiting for payment from your connection. "
                "Finish or cancel those checkouts first."
            )


def expire_superseded(session_ids: list[str]) -> None:
    """Ask Stripe to expire the sessions a newer checkout of their browser claimed.

    If Stripe can't be reached, a session still expires on its own, at its `expires_at`. The
    log says what Stripe answered: it refuses to expire a session that was paid (or whose
    delayed payment started) meanwhile.
    """
    for session_id in session_ids:
        try:
            session = stripe_gateway.expire_checkout_session(session_id)
        except stripe_gateway.PaymentProviderError as exc:
            log.warning("could not expire superseded session %s (it expires on its own): %s", session_id, exc)
        else:
            if session.status == "expired":
                log.info("expired session %s: its browser started a newer checkout", session_id)
            else:
                log.warning(
                    "superseded session %s was not expired: Stripe says it is %s, payment %s",
                    session_id, session.status, session.payment_status,
                )
