"""Disputes (chargebacks and inquiries), one record per Stripe dispute, beside the order they concern.

Fed by `charge.dispute.created`, `.updated`, `.funds_withdrawn`, `.funds_reinstated` and
`.closed`, in any order, linked to the order through the dispute's `payment_intent`. A dispute
of a payment no order is paid through yet waits for it, like a refund.

A dispute's status only moves forward: an inquiry (warning_needs_response → warning_under_review
→ warning_closed) can turn into a chargeback (needs_response → under_review → won or lost), and
a closed dispute stays closed. So a late event (an older status) never overwrites a newer one;
within one step the newer event (its `created`) wins. What Stripe withdrew from the balance and
gave back only grows.

The order's own status doesn't change: a disputed order is still paid, until the dispute is lost
(the money and a fee are gone; see `amount_withdrawn`, `fee_withdrawn`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, and_, case, exists, or_, select

from . import orders
from .extensions import db, upsert
from .models import Dispute, Order, utcnow
from .orders import InvalidEvent, Outcome

DISPUTE_EVENTS = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    }
)
# How far along each status is (`prevented`: closed before it became a dispute).
STEP = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
    "won": 4,
    "lost": 4,
    "warning_closed": 4,
    "prevented": 4,
}
OPEN_STATUSES = frozenset({"warning_needs_response", "warning_under_review", "needs_response", "under_review"})
# Closed in the shop's favour: the charge is the shop's again, refunds included.
SETTLED_FOR_THE_SHOP = frozenset({"won", "warning_closed", "prevented"})
INQUIRY_STATUSES = frozenset({"warning_needs_response", "warning_under_review", "warning_closed"})


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_dispute_event(event: Mapping[str, Any]) -> Outcome:
    """Any `charge.dispute.*` event: the dispute as it stands now."""
    dispute = event["data"]["object"]
    dispute_id, status, amount = dispute.get("id"), dispute.get("status"), dispute.get("amount")
    if not isinstance(dispute_id, str) or not dispute_id or not _int(amount):
        raise InvalidEvent("dispute.id or dispute.amount is missing or not valid")
    found = orders.paid_order_or_waiting(dispute.get("payment_intent"))
    if isinstance(found, Outcome):
        return found
    order = found
    if status not in STEP:
        return orders.flag_for_review(order, f"dispute {dispute_id} has a status the shop doesn't know: {status!r}")
    withdrawn = _balance_effect(dispute.get("balance_transactions"))
    details = dispute.get("evidence_details")
    due_by = details.get("due_by") if isinstance(details, Mapping) else None
    charge = dispute.get("charge")
    if isinstance(charge, Mapping):
        charge = charge.get("id")
    reported = {
        "status": status,
        "reason": str(dispute.get("reason") or "general")[:64],
        "amount": amount,
        "currency": str(dispute.get("currency") or order.currency)[:3],
        "due_by": due_by if _int(due_by) else None,
        "is_charge_refundable": dispute.get("is_charge_refundable") is True,
        "as_of": event["created"],
    }
    stored_step = case(*((Dispute.status == name, step) for name, step in STEP.items()), else_=0)
    newer = or_(stored_step < STEP[status], and_(stored_step == STEP[status], Dispute.as_of <= event["created"]))
    insert = upsert(Dispute).values(
        stripe_dispute_id=dispute_id,
        order_id=order.id,
        payment_intent_id=order.payment_intent_id,
        charge_id=charge if isinstance(charge, str) else None,
        livemode=dispute.get("livemode") is True,
        stripe_created=dispute["created"] if _int(dispute.get("created")) else event["created"],
        created_at=utcnow(),
        updated_at=utcnow(),
        **reported,
        **withdrawn,
    )
    db.session.execute(
        insert.on_conflict_do_update(
            index_elements=["stripe_dispute_id"],
            set_={
                **{name: case((newer, value), else_=getattr(Dispute, name)) for name, value in reported.items()},
                # Balance effects only accumulate: keep the larger of what is stored and reported.
                **{
                    name: case((getattr(Dispute, name) >= value, getattr(Dispute, name)), else_=value)
                    for name, value in withdrawn.items()
                },
                "updated_at": utcnow(),
            },
        )
    )
    return Outcome(f"dispute {dispute_id} {status}", order.id)


def _balance_effect(transactions: Any) -> dict[str, int]:
    """What the dispute's balance transactions took from the balance and gave back."""
    effect = {"amount_withdrawn": 0, "fee_withdrawn": 0, "amount_reinstated": 0, "fee_reinstated": 0}
    for transaction in transactions if isinstance(transactions, list) else []:
        if not isinstance(transaction, Mapping):
            continue  # an unexpanded id says nothing about amounts
        amount, fee = transaction.get("amount"), transaction.get("fee")
        if _int(amount):
            effect["amount_withdrawn" if amount < 0 else "amount_reinstated"] += abs(amount)
        if _int(fee):
            effect["fee_withdrawn" if fee > 0 else "fee_reinstated"] += abs(fee)
    return effect


def open_dispute_order_ids() -> Select[tuple[int]]:
    """The ids of orders with a dispute still open: for `Order.id.in_(...)` (nothing to ship there)."""
    return select(Dispute.order_id).where(Dispute.status.in_(OPEN_STATUSES))


def has_open_dispute() -> Any:
    """SQL: the order in the query has an open dispute."""
    return exists().where(Dispute.order_id == Order.id, Dispute.status.in_(OPEN_STATUSES))


def of_order(order_id: int) -> list[Dispute]:
    """The order's disputes, oldest first."""
    return list(
        db.session.scalars(
            select(Dispute).where(Dispute.order_id == order_id).order_by(Dispute.stripe_created, Dispute.id)
        )
    )


def refund_blockers(disputes: list[Dispute]) -> list[Dispute]:
    """The disputes under which Stripe refuses a refund of the charge (`is_charge_refundable` false).

    An inquiry can still be refunded; a chargeback can't until it is won.
    """
    return [
        dispute
        for dispute in disputes
        if dispute.status not in SETTLED_FOR_THE_SHOP and not dispute.is_charge_refundable
    ]


def open_disputes() -> list[tuple[Dispute, Order]]:
    """Every open dispute with its order, the one whose evidence is due first at the top."""
    rows = db.session.execute(
        select(Dispute, Order)
        .join(Order, Order.id == Dispute.order_id)
        .where(Dispute.status.in_(OPEN_STATUSES))
        .order_by(Dispute.due_by.is_(None), Dispute.due_by, Dispute.id)
    ).all()
    return [(dispute, order) for dispute, order in rows]


def dashboard_url(dispute: Dispute) -> str:
    """The dispute in Stripe's Dashboard, where evidence is submitted."""
    mode = "" if dispute.livemode else "test/"
    return f"https://dashboard.stripe.com/{mode}disputes/{dispute.stripe_dispute_id}"
