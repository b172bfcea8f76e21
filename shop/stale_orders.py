"""Orders stuck in `pending`: the process died before the order recorded its Checkout Session.

Such an order gives its stock back only once Stripe can no longer take its payment. Its session,
if Stripe made one, is unknown to the order, and Stripe's session list can't filter on
`client_reference_id`; it filters on `created`, though, and every session of an order is
created in a window the shop can name: `expires_at` is fixed by the order
(`stripe_gateway.session_expires_at`), and Stripe refuses a session whose `expires_at` is less
than 30 minutes after its creation, so none is created later than that allows (a replay of an
earlier request under the order's idempotency key returns the earlier session). The sweep lists
that window's sessions (with a minute's allowance for clock skew), keeps those naming the
order, and:

- none: Stripe holds nothing the order could be paid through; the order expires, stock back;
- open: it is expired at Stripe first, and what Stripe then says of it is applied;
- expired, paid or a delayed payment under way: applied as read, as its event would be (the
  order takes the session: expired, paid, or processing).

Stripe not answering leaves the order `pending`, its stock held, for the next sweep, and is
reported. No database connection is held while Stripe is waited on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from . import events, orders, stripe_gateway
from .extensions import db
from .models import Order

log = logging.getLogger("shop.stale_orders")

# Stripe's shortest Checkout Session: `expires_at` at least this long after creation.
STRIPE_MIN_SESSION_LIFETIME = timedelta(minutes=30)
# Allowance for the shop's and Stripe's clocks disagreeing.
CLOCK_SKEW = timedelta(minutes=1)


@dataclass
class StaleReport:
    expired: int = 0  # orders given up: no session at Stripe, or an expired one
    lines: list[str] = field(default_factory=list)  # one per order that had a session at Stripe
    failed: list[str] = field(default_factory=list)  # orders left pending: Stripe couldn't be asked


def sweep(older_than: timedelta) -> StaleReport:
    """Settle every order pending for longer than `older_than` by what Stripe holds for it."""
    report = StaleReport()
    stale = [(order.id, order.public_id, order.created_at) for order in orders.stale_pending_orders(older_than)]
    db.session.commit()
    latest_creation = stripe_gateway.checkout_session_lifetime() - STRIPE_MIN_SESSION_LIFETIME
    for order_id, public_id, created_at in stale:
        try:
            sessions = stripe_gateway.checkout_sessions_naming(
                public_id, created_at - CLOCK_SKEW, created_at + latest_creation + CLOCK_SKEW
            )
            sessions = [
                stripe_gateway.expire_or_read_back(session["id"]) if session.get("status") == "open" else session
                for session in sessions
            ]
        except stripe_gateway.PaymentProviderError as exc:
            log.error("stale order %s left pending: could not ask Stripe for its sessions: %s", public_id, exc)
            report.failed.append(f"{public_id}: left pending, could not ask Stripe for its Checkout Session: {exc}")
            continue
        if not sessions:
            report.expired += _give_up(order_id)
            continue
        for session in sessions:
            report.lines.append(f"{public_id}: {_apply(session)}")
        if db.session.get(Order, order_id).status == orders.OrderStatus.EXPIRED:
            report.expired += 1
        db.session.commit()
    if report.expired:
        log.warning("expired %d stale pending order(s)", report.expired)
    return report


def _give_up(order_id: int) -> int:
    order = db.session.get(Order, order_id)
    given_up = order is not None and orders.give_up_pending(order)
    db.session.commit()
    return int(given_up)


def _apply(session: dict) -> str:
    """Apply a session of a stale order as read from Stripe; a line for the report."""
    state = f"{session.get('status')}, {session.get('payment_status')}"
    try:
        outcome = events.apply_session_as_read(session)
    except Exception as exc:  # one order must not stop the others
        log.exception("could not apply session %s of a stale order", session.get("id"))
        return f"its session {session.get('id')} ({state}) could not be applied: {type(exc).__name__}: {exc}"
    if outcome is None:
        return f"its session {session['id']} is still {state}"
    return f"found its session {session['id']} at Stripe ({state}): {outcome.description}"
