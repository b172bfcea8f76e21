"""Refunds as records of their own: every Stripe refund by its id, and what they add up to.

Stripe reports refunds in several ways, depending on the endpoint's API version, in any order:

- `charge.refunded` carries the charge: its `amount_refunded`, and (before API 2022-11-15 only)
  its refunds listed under `refunds.data`.
- `refund.created`, `refund.updated`, `refund.failed` (API 2024-10-28 on) and
  `charge.refund.updated` (older endpoints) carry one refund.
- The operator's refund request records Stripe's answer, as `pending` until an event says more.

A refund's status only moves forward: pending ⇄ requires_action → succeeded → failed (a card
refund can succeed and fail later), and failed and canceled are final. So an event that
arrives late (an older status) never overwrites a newer one; within one step the newer event
(its `created`) wins.

What an order's refunds add up to counts the refunds that succeeded or are still on their way
(pending, or requiring the customer's action: Stripe holds that money for the refund). A
refund Stripe reported only through the charge's total (no refund event subscribed, or one
still to come) counts through that total, less what failed after it was reported.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import aliased

from . import orders
from .extensions import db, upsert
from .models import Order, Refund, utcnow
from .orders import InvalidEvent, Outcome

CHARGE_REFUNDED = "charge.refunded"
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})

PENDING, REQUIRES_ACTION, SUCCEEDED, FAILED, CANCELED = "pending", "requires_action", "succeeded", "failed", "canceled"
# How far along each status is: a refund never moves back to a lower step.
STEP = {PENDING: 0, REQUIRES_ACTION: 0, SUCCEEDED: 1, FAILED: 2, CANCELED: 2}
ON_ITS_WAY = frozenset({PENDING, REQUIRES_ACTION})
COUNTED = ON_ITS_WAY | {SUCCEEDED}
DID_NOT_HAPPEN = frozenset({FAILED, CANCELED})
# Stripe's `failure_reason` values, as the operator reads them.
FAILURE_REASONS = {
    "expired_or_canceled_card": "the customer's card has expired or was cancelled",
    "lost_or_stolen_card": "the customer's card was reported lost or stolen",
    "declined": "the customer's bank declined the refund",
    "insufficient_funds": "the Stripe balance could not cover the refund",
    "merchant_request": "the refund was cancelled at the shop's request",
    "charge_for_pending_refund_disputed": "the payment was disputed while the refund was pending",
    "unknown": "the customer's bank gave no reason",
}


def failure_text(reason: str | None) -> str:
    """Stripe's failure reason in words, with its code."""
    if not reason:
        return "Stripe gave no reason"
    return f"{FAILURE_REASONS.get(reason, 'see Stripe')} ({reason})"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_charge_refunded(event: Mapping[str, Any]) -> Outcome:
    """`charge.refunded`: the charge's refunded total, and its refunds if the event lists them."""
    charge = event["data"]["object"]
    found = orders.paid_order_or_waiting(charge.get("payment_intent"))
    if isinstance(found, Outcome):
        return found
    order = found
    total = charge.get("amount_refunded")
    if not _int(total) or charge.get("currency") != order.currency:
        return orders.flag_for_review(order, f"refund of {total} {charge.get('currency')} does not fit the order")
    listed = charge.get("refunds")
    for refund in listed.get("data") or [] if isinstance(listed, Mapping) else []:
        problem = _record(order, refund, event["created"])
        if problem:
            return orders.flag_for_review(order, problem)
    order_id = order.id
    db.session.execute(
        update(Order)
        .where(
            Order.id == order_id,
            # Within one second the larger total is the newer: only a failure, later, lowers it.
            or_(
                Order.charge_refunded_as_of.is_(None),
                Order.charge_refunded_as_of < event["created"],
                and_(Order.charge_refunded_as_of == event["created"], Order.charge_amount_refunded < total),
            ),
        )
        .values(charge_amount_refunded=total, charge_refunded_as_of=event["created"])
        .execution_options(synchronize_session=False)
    )
    db.session.expire(order)
    return settle(order)


def apply_refund_event(event: Mapping[str, Any]) -> Outcome:
    """`refund.*` or `charge.refund.updated`: one refund as it stands now."""
    refund = event["data"]["object"]
    found = orders.paid_order_or_waiting(refund.get("payment_intent"))
    if isinstance(found, Outcome):
        return found
    problem = _record(found, refund, event["created"])
    if problem:
        return orders.flag_for_review(found, problem)
    return settle(found)


def record_requested(order: Order, refund: Mapping[str, Any]) -> None:
    """The operator's refund as Stripe accepted it: pending until its events say otherwise. The caller commits."""
    orders.lock_payment(refund["payment_intent"])
    _record(order, {**refund, "status": PENDING}, refund["created"])
    settle(order)


def _record(order: Order, refund: Any, as_of: int) -> str | None:
    """Insert or move forward one refund; a reason it doesn't fit the order, else None."""
    if not isinstance(refund, Mapping) or refund.get("object") != "refund":
        raise InvalidEvent("a refund is not a refund object")
    refund_id, amount, status = refund.get("id"), refund.get("amount"), refund.get("status")
    if not isinstance(refund_id, str) or not refund_id or not _int(amount) or amount < 0:
        raise InvalidEvent("refund.id or refund.amount is missing or not valid")
    if status not in STEP:
        return f"refund {refund_id} has a status the shop doesn't know: {status!r}"
    if refund.get("currency") != order.currency:
        return f"refund {refund_id} of {amount} {refund.get('currency')} does not fit the order"
    failure = refund.get("failure_reason") if status in DID_NOT_HAPPEN else None
    reported = {
        "status": status,
        "amount": amount,
        "reason": refund.get("reason") if isinstance(refund.get("reason"), str) else None,
        "failure_reason": failure if isinstance(failure, str) else None,
        "as_of": as_of,
        "updated_at": utcnow(),
    }
    created = refund.get("created")
    stored_step = case(*((Refund.status == name, step) for name, step in STEP.items()), else_=0)
    newer = or_(stored_step < STEP[status], and_(stored_step == STEP[status], Refund.as_of <= as_of))
    db.session.execute(
        upsert(Refund)
        .values(
            stripe_refund_id=refund_id,
            order_id=order.id,
            payment_intent_id=order.payment_intent_id,
            currency=order.currency,
            stripe_created=created if _int(created) else as_of,
            created_at=utcnow(),
            **reported,
        )
        .on_conflict_do_update(index_elements=["stripe_refund_id"], set_=reported, where=newer)
    )
    return None


@dataclass(frozen=True)
class RefundTotals:
    refunded: int  # succeeded or on its way
    on_its_way: int


def totals(order: Order, refunds: list[Refund]) -> RefundTotals:
    """What the order's refunds add up to (see the module's docstring)."""
    counted = sum(refund.amount for refund in refunds if refund.status in COUNTED)
    on_its_way = sum(refund.amount for refund in refunds if refund.status in ON_ITS_WAY)
    charge_total = order.charge_amount_refunded
    if charge_total is None:
        return RefundTotals(counted, on_its_way)
    failed_since = sum(
        refund.amount
        for refund in refunds
        if refund.status in DID_NOT_HAPPEN and refund.as_of >= (order.charge_refunded_as_of or 0)
    )
    return RefundTotals(max(counted, charge_total - failed_since), on_its_way)


def settle(order: Order) -> Outcome:
    """Bring the order's refunded amount and status in line with its refunds."""
    result = totals(order, of_order(order.id))
    return orders.settle_refunds(order, result.refunded, result.on_its_way)


def of_order(order_id: int) -> list[Refund]:
    """The order's refunds, oldest first."""
    return list(
        db.session.scalars(select(Refund).where(Refund.order_id == order_id).order_by(Refund.stripe_created, Refund.id))
    )


def failed_needing_attention() -> list[tuple[Refund, Order]]:
    """Refunds that failed, newest first, unless a later refund of the same order went through.

    The customer hasn't got this money back: the operator refunds again or contacts them.
    """
    later = aliased(Refund)
    retried = (
        select(later.id)
        .where(later.order_id == Refund.order_id, later.stripe_created > Refund.stripe_created, later.status.in_(COUNTED))
        .exists()
    )
    rows = db.session.execute(
        select(Refund, Order)
        .join(Order, Order.id == Refund.order_id)
        .where(Refund.status == FAILED, ~retried)
        .order_by(Refund.as_of.desc(), Refund.id)
    ).all()
    return [(refund, order) for refund, order in rows]
