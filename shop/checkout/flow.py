"""Checkout orchestration: save the order, then create its Stripe Checkout Session."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from flask import current_app, url_for

from .. import orders, reservations, stripe_gateway
from ..client_address import client_address
from ..extensions import db
from ..models import Order
from ..orders import CartLine, OrderStatus
from .cart import MAX_QUANTITY


def start_checkout(shopper_id: str, checkout_token: str, lines: Sequence[CartLine]) -> Order:
    """Return the order for this form submission, with a Checkout Session when possible.

    The order is committed before Stripe is called, so a crash in between leaves a pending
    order that the sweep expires, never a session without an order. A second submission of
    the same form reuses the order, and the order-derived idempotency key makes Stripe
    return the same session.

    A new order must keep its client within its share of each product's stock
    (reservations.ShareExceeded otherwise, nothing saved), its browser must have no delayed
    payment still processing (reservations.PaymentStillProcessing), and once its session exists
    the browser's older open sessions are expired: one open checkout per browser.

    Raises stripe_gateway.PaymentProviderError after marking the order failed.
    """
    config = current_app.config
    order, created = orders.place_order(
        shopper_id,
        checkout_token,
        lines,
        config["SHOP_CURRENCY"],
        client_key=reservations.client_key(client_address()),
        check_bounds=partial(reservations.check_client_share, share=config["CHECKOUT_STOCK_SHARE"], full_cart=MAX_QUANTITY),
    )
    db.session.commit()
    if order.status != OrderStatus.PENDING:
        return order
    success_url = url_for("checkout.success", _external=True) + "?session_id={CHECKOUT_SESSION_ID}"
    cancel_url = url_for("checkout.cancel", order=order.public_id, _external=True)
    _release_connection(order)
    try:
        session = stripe_gateway.create_checkout_session(order, success_url, cancel_url)
    except stripe_gateway.PaymentProviderError as exc:
        current_app.logger.warning("no Checkout Session for %s: %s", order.public_id, exc)
        # A resubmission must not fail an order its twin may still be starting; a closed window
        # can't reopen. Only a still-pending order is ever failed here (see orders).
        if created or isinstance(exc, stripe_gateway.CheckoutWindowClosed):
            db.session.add(order)
            orders.mark_checkout_failed(order)
            db.session.commit()
        raise
    db.session.add(order)
    orders.record_checkout_session(order, session.id, session.url)
    db.session.commit()
    if created:
        reservations.expire_earlier_checkouts(order)
    return order


def _release_connection(order: Order) -> None:
    """Load the order and its items, detach them and end the transaction, returning its connection.

    Stripe can take seconds to answer; holding a pooled connection meanwhile lets a burst of
    checkouts exhaust the pool (offline, the emulator serving the call needs a connection of
    its own, so they could even wait on each other). The caller adds the order back after.
    """
    db.session.refresh(order)
    _ = order.items
    db.session.expunge(order)
    db.session.commit()
