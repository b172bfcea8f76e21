"""Checkout orchestration: save the order, then create its Stripe Checkout Session."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flask import current_app, url_for

from .. import orders, placing, reservations, stripe_gateway
from ..client_address import client_address
from ..extensions import db
from ..models import Order
from ..orders import OrderStatus
from ..placing import CartLine
from .cart import MAX_QUANTITY


@dataclass(frozen=True)
class StartedCheckout:
    """How a checkout stands once started: what the view needs to answer, without a database read."""

    status: str
    checkout_url: str | None
    stripe_session_id: str | None
    superseded: bool  # a newer checkout of the same browser replaced it

    @classmethod
    def of(cls, order: Order) -> StartedCheckout:
        return cls(order.status, order.checkout_url, order.stripe_session_id, order.superseded_at is not None)


def start_checkout(shopper_id: str, checkout_token: str, lines: Sequence[CartLine]) -> StartedCheckout:
    """Start the checkout of this form submission: its order, with a Checkout Session when possible.

    The order is committed before Stripe is called, so a crash in between leaves a pending
    order that the sweep expires, never a session without an order. A second submission of
    the same form reuses the order, and the order-derived idempotency key makes Stripe
    return the same session.

    A new order must keep its client within its share of each product's stock
    (reservations.ShareExceeded otherwise, nothing saved), its browser must have no delayed
    payment still processing (reservations.PaymentStillProcessing), and once its session exists
    the browser's older open sessions are expired: one open checkout per browser.

    No database connection is held while Stripe is waited on, and a new order is not read
    back: what was written is known.

    Raises stripe_gateway.PaymentProviderError after marking the order failed.
    """
    config = current_app.config
    order, created = placing.place_order(
        shopper_id,
        checkout_token,
        lines,
        config["SHOP_CURRENCY"],
        client_key=reservations.client_key(client_address()),
        bounds=reservations.client_bounds(share=config["CHECKOUT_STOCK_SHARE"], full_cart=MAX_QUANTITY),
    )
    if order.status != OrderStatus.PENDING:
        started = StartedCheckout.of(order)
        db.session.commit()
        return started
    success_url = url_for("checkout.success", _external=True) + "?session_id={CHECKOUT_SESSION_ID}"
    cancel_url = url_for("checkout.cancel", order=order.public_id, _external=True)
    if not created:
        _release_connection(order)
    try:
        session = stripe_gateway.create_checkout_session(order, success_url, cancel_url)
    except stripe_gateway.PaymentProviderError as exc:
        current_app.logger.warning("no Checkout Session for %s: %s", order.public_id, exc)
        # A resubmission must not fail an order its twin may still be starting (nor may the first
        # submission while its twin holds the idempotency key); a closed window can't reopen.
        # Only a still-pending order is ever failed here (see orders).
        twin_is_starting = isinstance(exc, stripe_gateway.SessionBeingCreated)
        if (created and not twin_is_starting) or isinstance(exc, stripe_gateway.CheckoutWindowClosed):
            db.session.add(order)
            orders.mark_checkout_failed(order)
            db.session.commit()
        raise
    recorded, claimed = orders.record_checkout_session(order, session.id, session.url, claim_earlier=created)
    reservations.expire_superseded(claimed)
    if not created or not recorded:
        # A twin or Stripe's event moved it first: as it stands now.
        db.session.add(order)
        db.session.refresh(order)
        started = StartedCheckout.of(order)
        db.session.commit()
        return started
    return StartedCheckout(OrderStatus.AWAITING_PAYMENT, session.url, session.id, session.id in claimed)


def _release_connection(order: Order) -> None:
    """Read the order found by its checkout token with its items, detach it and end the transaction.

    Stripe can take seconds to answer; holding a pooled connection meanwhile lets a burst of
    checkouts exhaust the pool (offline, the emulator serving the call needs a connection of
    its own, so they could even wait on each other). The caller adds the order back after.
    """
    db.session.refresh(order)
    _ = order.items
    db.session.expunge(order)
    db.session.commit()
