"""Order lifecycle: the one place where an order changes state.

    pending ──► awaiting_payment ──► paid ◄──► partially_refunded ◄──► refunded
       │              │    └──► processing ──► paid / failed
       │              ├──► failed
       └──► failed    ├──► expired
            expired   └──► cancelled (the shopper left Stripe's page and Stripe closed the session)

Once paid, an order stays in the paid states: its refunds (`shop.refunds`) move it between
them, back towards `paid` when a refund fails. Disputes (`shop.disputes`) sit beside it.

Each transition is one conditional UPDATE (`... WHERE status IN (allowed sources)`), so
concurrent or repeated deliveries apply it at most once, and nothing moves a paid order
backwards. A verified payment is never dropped: `paid` is also reachable from `failed`
`expired` and `cancelled`, because money that Stripe says it took must show on the order.

A refund or dispute can reach the shop before the payment it concerns (Stripe promises no
order of delivery): it waits, kept on its event row, until an order is paid through that
payment intent, and is applied in the same transaction as that payment.

Stock: placing an order (`shop.placing`) reserves its units (a conditional UPDATE, so
concurrent shoppers can't oversell); entering `failed`, `expired` or `cancelled` returns
them; `paid` keeps them.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from . import batches
from .extensions import db
from .models import EventState, Order, Product, open_unclaimed, utcnow

log = logging.getLogger("shop.orders")


class OrderStatus(StrEnum):
    PENDING = "pending"
    AWAITING_PAYMENT = "awaiting_payment"
    PROCESSING = "processing"
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


S = OrderStatus
# For each target state, the states it may be entered from.
ALLOWED_SOURCES: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.AWAITING_PAYMENT: frozenset({S.PENDING}),
    S.PROCESSING: frozenset({S.AWAITING_PAYMENT}),
    S.PAID: frozenset({S.AWAITING_PAYMENT, S.PROCESSING, S.FAILED, S.EXPIRED, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING, S.AWAITING_PAYMENT, S.PROCESSING}),
    S.EXPIRED: frozenset({S.PENDING, S.AWAITING_PAYMENT}),
    S.CANCELLED: frozenset({S.AWAITING_PAYMENT}),
    S.PARTIALLY_REFUNDED: frozenset({S.PAID, S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.REFUNDED: frozenset({S.PAID, S.PARTIALLY_REFUNDED}),
}
# `paid` is entered from the refunded states only through `settle_refunds` (refunds that
# failed), never by a session event: a redelivered payment must not undo a refund.
# A failed session creation may fail only an order still waiting for its session.
CHECKOUT_FAILED_SOURCES = frozenset({S.PENDING})
PAID_STATES = frozenset({S.PAID, S.PARTIALLY_REFUNDED, S.REFUNDED})
OPEN_STATES = frozenset({S.PENDING, S.AWAITING_PAYMENT, S.PROCESSING})
# Orders in these states hold their units of stock.
HOLDS_STOCK = OPEN_STATES | PAID_STATES

SESSION_COMPLETED = "checkout.session.completed"
SESSION_ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
SESSION_ASYNC_FAILED = "checkout.session.async_payment_failed"
SESSION_EXPIRED = "checkout.session.expired"
SESSION_EVENTS = frozenset({SESSION_COMPLETED, SESSION_ASYNC_SUCCEEDED, SESSION_ASYNC_FAILED, SESSION_EXPIRED})


class InvalidEvent(ValueError):
    """A verified body that is still not an event this shop can act on."""


class CheckoutTokenConflict(Exception):
    """The checkout token was already used for a different cart or by another browser."""


class OutOfStock(Exception):
    """Not enough units left for the cart; the message is for the shopper."""


@dataclass(frozen=True)
class Outcome:
    """What handling one Stripe event did, recorded on the event row.

    `waiting_for` names the payment intent a waiting event waits for; `paid_through` the
    payment intent an order was just paid through, whose waiting events are now due.
    """

    description: str
    order_id: int | None = None
    state: EventState = EventState.APPLIED
    waiting_for: str | None = None
    paid_through: str | None = None


def new_public_id() -> str:
    return "ord_" + secrets.token_urlsafe(16)


# A conditional UPDATE: concurrent checkouts can't take the same unit twice.
RESERVE_STOCK = (
    update(Product)
    .where(Product.id == bindparam("product_id"), Product.stock >= bindparam("quantity"))
    .values(stock=Product.stock - bindparam("quantity"))
    .execution_options(synchronize_session=False)
)


def _reserve(product_id: int, quantity: int) -> None:
    if not db.session.execute(RESERVE_STOCK, {"product_id": product_id, "quantity": quantity}).rowcount:
        raise out_of_stock(product_id)


def out_of_stock(product_id: int) -> OutOfStock:
    """The shopper's message for a product that has fewer units left than asked for."""
    name, left = db.session.execute(select(Product.name, Product.stock).where(Product.id == product_id)).one()
    return OutOfStock(f"Sorry, {name} is sold out." if left == 0 else f"Sorry, only {left} {name} left.")


def _return_stock(order: Order) -> None:
    for item in sorted(order.items, key=lambda item: item.product_id):
        db.session.execute(
            update(Product)
            .where(Product.id == item.product_id)
            .values(stock=Product.stock + item.quantity)
            .execution_options(synchronize_session=False)
        )


def _transition(
    order: Order, target: OrderStatus, *, sources: frozenset[OrderStatus] | None = None, **values: Any
) -> bool:
    """Move the order to `target` if its current state allows it. True if this call moved it.

    `sources` narrows the states the move is allowed from. Stock follows the move: units go
    back when an order stops holding them, and are taken again when a released order turns
    out to be paid after all.
    """
    allowed = ALLOWED_SOURCES[target] if sources is None else sources & ALLOWED_SOURCES[target]
    moved = _move(order, target, allowed & HOLDS_STOCK, values)
    if moved and target not in HOLDS_STOCK:
        _return_stock(order)
    elif not moved and target in HOLDS_STOCK:
        moved = _move(order, target, allowed - HOLDS_STOCK, values)
        if moved:
            _take_stock_again(order)
    return moved


def _move(order: Order, target: OrderStatus, sources: frozenset[OrderStatus], values: dict[str, Any]) -> bool:
    if not sources:
        return False
    order_id, public_id = order.id, order.public_id
    result = db.session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status.in_(sources))
        .values(status=target, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    db.session.expire(order)
    if result.rowcount == 1:
        log.info("order %s -> %s", public_id, target)
        return True
    return False


def _take_stock_again(order: Order) -> None:
    """A released order was paid anyway: take its units back, or flag it if they're gone."""
    try:
        with db.session.begin_nested():
            for item in sorted(order.items, key=lambda item: item.product_id):
                _reserve(item.product_id, item.quantity)
    except OutOfStock as exc:
        flag_for_review(order, f"paid after its stock was released, and stock ran short: {exc}")


RECORD_SESSION = (
    update(Order)
    .where(Order.id == bindparam("order_id"), or_(*(Order.status == source for source in sorted(ALLOWED_SOURCES[S.AWAITING_PAYMENT]))))
    .values(status=S.AWAITING_PAYMENT, updated_at=bindparam("now"), stripe_session_id=bindparam("session_id"),
            checkout_url=bindparam("url"))
    .returning(Order.id)
)
_newer, _recorded = aliased(Order), aliased(Order)


# The browser's open sessions older than its newest one, once `order_id` has recorded `session_id`.
# "Open" is the predicate of the partial index `ix_orders_shopper_open` (`models.open_unclaimed`),
# so that both lookups by browser read only its unclaimed orders awaiting payment: with a
# bound status, or with statistics taken before a crowd arrived, PostgreSQL chose plans that
# walked every order awaiting payment, or every order below the newest.
CLAIM_EARLIER_SESSIONS = (
    update(Order)
    .where(
        Order.shopper_id == bindparam("browser"),
        open_unclaimed(Order),
        Order.id < select(func.max(_newer.id)).where(_newer.shopper_id == bindparam("browser"), open_unclaimed(_newer))
        .scalar_subquery(),
        exists().where(
            _recorded.id == bindparam("order_id"),
            _recorded.stripe_session_id == bindparam("session_id"),
            _recorded.status == S.AWAITING_PAYMENT,
        ),
    )
    .values(superseded_at=bindparam("now"))
    .returning(Order.stripe_session_id)
    .execution_options(synchronize_session=False)
)


def record_checkout_session(order: Order, session_id: str, url: str, claim_earlier: bool = False) -> tuple[bool, list[str]]:
    """Remember the Checkout Session created for a pending order: whether this call recorded it.

    With `claim_earlier` (a new order: one open checkout per browser), it then claims the
    browser's open sessions older than its newest one, to be expired, and returns their ids.
    Only orders older (a smaller id) than the browser's newest order awaiting payment are
    claimed, so the newest open checkout always survives, and `order` itself is claimed when a
    newer tab got its session first. The claim is a transaction of its own, begun after the
    session's record is committed: two tabs' checkouts then each see the other's session (at
    least the later one does) and exactly one stays payable. Each is claimed once (one
    conditional UPDATE), so concurrent checkouts never ask Stripe twice. The orders keep their
    status and stock: those change when Stripe's `checkout.session.expired` arrives. Both
    transactions go to the database in one round trip, and are committed here.
    """
    parameters = {"order_id": order.id, "browser": order.shopper_id, "session_id": session_id, "url": url, "now": utcnow()}
    transactions = [[(RECORD_SESSION, parameters)]]
    if claim_earlier:
        transactions.append([(CLAIM_EARLIER_SESSIONS, parameters)])
    answers = batches.committed_one_after_another(*transactions)
    recorded = bool(answers[0][0].rows)
    if recorded:
        log.info("order %s -> %s", order.public_id, S.AWAITING_PAYMENT)
    return recorded, [row[0] for row in answers[1][0].rows] if claim_earlier else []


def mark_checkout_failed(order: Order) -> bool:
    """Stripe could not create a session: the order will never be paid, so say so.

    Only a `pending` order: one that moved on got its session from a twin request (the same
    form submitted again), and its shopper may be paying it right now.
    """
    return _transition(order, S.FAILED, sources=CHECKOUT_FAILED_SOURCES)


def mark_cancelled(order: Order) -> bool:
    """The shopper cancelled and Stripe confirmed the session can no longer be paid.

    A later `checkout.session.expired` for the same session then changes nothing, so the
    order keeps reading as the shopper's own cancellation.
    """
    return _transition(order, S.CANCELLED)


def stale_pending_orders(older_than: timedelta, now: datetime | None = None) -> list[Order]:
    """Orders still `pending` (no Checkout Session recorded) placed more than `older_than` ago, oldest first."""
    cutoff = (now or utcnow()) - older_than
    return list(
        db.session.scalars(
            select(Order).where(Order.status == S.PENDING, Order.created_at < cutoff).order_by(Order.created_at)
        )
    )


def give_up_pending(order: Order) -> bool:
    """Expire an order that never recorded a Checkout Session, and return its stock.

    Only while it is still `pending`: the caller has made sure Stripe holds no session it could
    be paid through (see `stale_orders`), and an order that took its session meanwhile is not stale.
    """
    return _transition(order, S.EXPIRED, sources=frozenset({S.PENDING}))


def flag_for_review(order: Order, reason: str) -> Outcome:
    """Mark the order for an operator to look at, and log why. Its status doesn't change.

    The event that caused it is listed under "Events needing attention" (`needs_review`).
    """
    order_id = order.id
    log.error("order %s needs review: %s", order.public_id, reason)
    db.session.execute(
        update(Order).where(Order.id == order_id).values(review_reason=reason[:500], updated_at=utcnow())
    )
    db.session.expire(order)
    return Outcome(f"flagged for review: {reason}", order_id, state=EventState.NEEDS_REVIEW)


def _presentment_of(session: Mapping[str, Any]) -> dict[str, Any]:
    """What the customer saw under Adaptive Pricing (`presentment_details`), as order columns.

    For display only: a payment is checked against the shop's own `amount_total` and
    `currency`, which Adaptive Pricing leaves in the shop's currency. Anything odd is dropped.
    """
    details = session.get("presentment_details")
    amount = details.get("presentment_amount") if isinstance(details, Mapping) else None
    currency = details.get("presentment_currency") if isinstance(details, Mapping) else None
    if not isinstance(amount, int) or isinstance(amount, bool) or not isinstance(currency, str) or len(currency) != 3:
        amount, currency = None, None
    return {"presentment_amount": amount, "presentment_currency": currency and currency.lower()}


def _payment_mismatch(order: Order, amount: Any, currency: Any) -> str | None:
    if amount != order.amount_total or currency != order.currency:
        return f"Stripe reports {amount} {currency}, order is {order.amount_total} {order.currency}"
    return None


def _stripe_id(value: Any) -> str | None:
    """A Stripe object id, or None for null/missing/odd values, so nothing ever matches on NULL."""
    return value if isinstance(value, str) and value else None


def _require_payment_fields(session: Mapping[str, Any]) -> None:
    """The fields a payment of one of the shop's sessions is checked by."""
    for key, kind in (("payment_status", str), ("amount_total", int), ("currency", str)):
        value = session.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise InvalidEvent(f"checkout.session.{key} is missing or not a {kind.__name__}")


def lock_payment(payment_intent: str) -> None:
    """Serialize, until the transaction ends, everything that concerns one payment intent.

    A refund that finds no paid order for its payment decides to wait while, at the same
    moment, the order may be getting paid through that payment: without a common lock each
    could miss the other's uncommitted write, and the refund would wait forever. SQLite
    already serializes every writing transaction.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(payment_intent, 0))))


def apply_session_event(event_type: str, session: Mapping[str, Any]) -> Outcome:
    """Apply a verified `checkout.session.*` event to the order it belongs to.

    The shop's own sessions are checked against an order; any other session (another
    integration's, a setup or subscription session, `stripe trigger`) is not ours, whatever
    its amounts. A session no order has recorded but whose `client_reference_id` (or
    `metadata[order_id]`) names one of the shop's orders is never "not ours": see
    `_order_naming`.
    """
    order = db.session.scalar(select(Order).where(Order.stripe_session_id == session["id"]))
    if order is None:
        order = _order_naming(session)
        if order is None:
            return Outcome("not ours: no order has this checkout session", state=EventState.NOT_OURS)
        if order.stripe_session_id != session["id"]:
            return _session_of_an_order_that_moved_on(event_type, session, order)
    if session.get("client_reference_id") != order.public_id:
        return flag_for_review(order, f"session {session['id']} names another order")

    if event_type in (SESSION_COMPLETED, SESSION_ASYNC_SUCCEEDED):
        _require_payment_fields(session)

    payment_intent = _stripe_id(session.get("payment_intent"))
    paid_values: dict[str, Any] = {
        "customer_email": (session.get("customer_details") or {}).get("email") or session.get("customer_email"),
        **_presentment_of(session),
    }
    if payment_intent:
        paid_values["payment_intent_id"] = payment_intent
    paid_now = (event_type == SESSION_COMPLETED and session.get("payment_status") == "paid") or (
        event_type == SESSION_ASYNC_SUCCEEDED
    )
    if paid_now:
        mismatch = _payment_mismatch(order, session.get("amount_total"), session.get("currency"))
        if mismatch:
            return flag_for_review(order, mismatch)
        target, values = S.PAID, {**paid_values, "paid_at": utcnow()}
    elif event_type == SESSION_COMPLETED:
        target, values = S.PROCESSING, paid_values
    elif event_type == SESSION_ASYNC_FAILED:
        target, values = S.FAILED, {}
    else:
        target, values = S.EXPIRED, {}

    order_id = order.id  # read before the transition expires the instance
    payment_intent = payment_intent or order.payment_intent_id
    if target == S.PAID and payment_intent:
        lock_payment(payment_intent)  # before the order is paid, so a waiting refund can't slip past
    if _transition(order, target, **values):
        paid_through = payment_intent if target == S.PAID else None
        return Outcome(f"order {target}", order_id, paid_through=paid_through)
    return Outcome(f"no change: order already {order.status}", order_id)


def _named_order_id(session: Mapping[str, Any]) -> str | None:
    """The order a session names: its `client_reference_id`, else `metadata[order_id]` (the checkout sets both)."""
    metadata = session.get("metadata")
    for reference in (session.get("client_reference_id"), metadata.get("order_id") if isinstance(metadata, Mapping) else None):
        if isinstance(reference, str) and reference:
            return reference
    return None


def _order_naming(session: Mapping[str, Any]) -> Order | None:
    """The order a session no order has recorded names, with the session recorded on it if it can be.

    The process may have died between Stripe creating the session and the shop recording it:
    the order is then still `pending`, and it takes the session now (one conditional UPDATE,
    so a concurrent delivery or the checkout itself recording it is no problem), and the event
    is applied as usual with all its checks. Any other order is returned as it is.
    """
    public_id = _named_order_id(session)
    order = None if public_id is None else db.session.scalar(select(Order).where(Order.public_id == public_id))
    if order is None or session.get("client_reference_id") != order.public_id:
        return order
    order_id = order.id
    payment_intent = _stripe_id(session.get("payment_intent"))
    if payment_intent:
        lock_payment(payment_intent)  # the payment's lock before the order's row, as everywhere else
    recorded = db.session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status == S.PENDING, Order.stripe_session_id.is_(None))
        .values(status=S.AWAITING_PAYMENT, stripe_session_id=session["id"], updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.expire(order)
    if recorded:
        log.warning("order %s -> %s: took its checkout session %s from Stripe's event", public_id, S.AWAITING_PAYMENT, session["id"])
    return order


def _session_of_an_order_that_moved_on(event_type: str, session: Mapping[str, Any], order: Order) -> Outcome:
    """An event for a session that names an order that was given up, or has another session.

    A payment (or a delayed one starting) is money Stripe took for an order the shop no longer
    offers: the order is flagged and the event listed as needing attention, never dropped.
    Anything else (the session expired, its delayed payment failed) changes nothing.
    """
    state = order.status if order.stripe_session_id is None else f"{order.status} with session {order.stripe_session_id}"
    if event_type in (SESSION_COMPLETED, SESSION_ASYNC_SUCCEEDED):
        amount = f"{session.get('amount_total')} {session.get('currency')}"
        return flag_for_review(
            order,
            f"{event_type} ({session.get('payment_status')}, {amount}, payment {session.get('payment_intent')}) for "
            f"session {session['id']}, which names this order, while the order was {state}: "
            "refund it in the Stripe Dashboard or fulfil the order",
        )
    return Outcome(f"no change: session {session['id']} names order {order.public_id}, which is {state}", order.id)


# What `apply_session_event` does for the webhook's common case, a paid
# `checkout.session.completed` for an order that holds its stock and matches the session, as
# one conditional UPDATE with named parameters (see `shop.paid_sessions`, which runs it).
PAY_MATCHING_ORDER = (
    update(Order)
    .where(
        Order.stripe_session_id == bindparam("session_id"),
        Order.public_id == bindparam("client_reference_id"),
        Order.amount_total == bindparam("amount_total"),
        Order.currency == bindparam("currency"),
        or_(*(Order.status == source for source in sorted(ALLOWED_SOURCES[S.PAID] & HOLDS_STOCK))),
    )
    .values(
        status=S.PAID,
        paid_at=bindparam("now"),
        updated_at=bindparam("now"),
        payment_intent_id=bindparam("payment_intent"),
        customer_email=bindparam("customer_email"),
        presentment_amount=bindparam("presentment_amount"),
        presentment_currency=bindparam("presentment_currency"),
    )
    .returning(Order.id, Order.public_id)
)
PAID_OUTCOME = f"order {S.PAID}"


def pay_matching_order_parameters(event_type: str, session: Mapping[str, Any]) -> dict[str, Any] | None:
    """PAY_MATCHING_ORDER's parameters for the event, or None if it is not that common case."""
    if event_type != SESSION_COMPLETED or session.get("payment_status") != "paid":
        return None
    details = session.get("customer_details")
    if details is not None and not isinstance(details, Mapping):
        return None
    email = (details or {}).get("email") or session.get("customer_email")
    amount, currency, reference = session.get("amount_total"), session.get("currency"), session.get("client_reference_id")
    payment_intent = _stripe_id(session.get("payment_intent"))
    if (
        payment_intent is None
        or not isinstance(amount, int)
        or isinstance(amount, bool)
        or not isinstance(currency, str)
        or not isinstance(reference, str)
        or not (email is None or isinstance(email, str))
    ):
        return None
    return {
        "session_id": session["id"],
        "client_reference_id": reference,
        "amount_total": amount,
        "currency": currency,
        "payment_intent": payment_intent,
        "customer_email": email,
        "now": utcnow(),
        **_presentment_of(session),
    }


def paid_order_or_waiting(payment_intent: Any) -> Order | Outcome:
    """The paid order a refund or dispute of this payment concerns, or the outcome to record instead.

    Locks the payment (see `lock_payment`). A payment no order is paid through yet is waited
    for: Stripe doesn't promise that the payment's own events arrive first. An object without
    a payment intent (the legacy Charges API) can't be one of this shop's Checkout payments.
    """
    payment_intent = _stripe_id(payment_intent)
    if payment_intent is None:
        return Outcome("not ours: no payment intent", state=EventState.NOT_OURS)
    lock_payment(payment_intent)
    order = db.session.scalar(select(Order).where(Order.payment_intent_id == payment_intent))
    if order is None or order.status not in PAID_STATES:
        why = "no order has this payment yet" if order is None else f"order {order.public_id} is not paid yet"
        return Outcome(
            f"waiting: {why}",
            None if order is None else order.id,
            state=EventState.WAITING,
            waiting_for=payment_intent,
        )
    return order


def settle_refunds(order: Order, refunded: int, pending: int) -> Outcome:
    """Set what the order's refunds add up to (`pending` of it still on its way) and the status that follows.

    Only between the paid states: refunds that failed return the order to `paid` or
    `partially_refunded`, never to before its payment.
    """
    target = S.PAID if refunded <= 0 else S.REFUNDED if refunded >= order.amount_total else S.PARTIALLY_REFUNDED
    order_id, public_id = order.id, order.public_id
    result = db.session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status.in_(PAID_STATES))
        .values(status=target, amount_refunded=max(refunded, 0), amount_refund_pending=pending, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.expire(order)
    if result.rowcount == 1:
        log.info("order %s: %s, %s refunded", public_id, target, refunded)
        return Outcome(f"order {target} ({refunded} refunded)", order_id)
    return Outcome(f"no change: order already {order.status}", order_id)
