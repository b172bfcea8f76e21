"""Recovery for missed webhooks and interrupted checkouts (`flask stripe sync`), and the
operator's "retry now" for an event that failed or waits.

No single event can stop a sync: one that fails is recorded as failed on its row (by the
intake, with the error), reported, and the sync goes on with the next.

Stripe lists events of the last 30 days only, so a sync never asks further back. An open
order older than that may have events Stripe no longer has: its Checkout Session is read
back from the API instead, and applied as the event it stands for would be.

A refund waits for the payment it refunds (see `events`). One still waiting after
WAITING_GRACE is looked up at Stripe by its payment intent: a payment of another integration
on the account has no Checkout Session of this shop, and its refund is recorded as not ours;
a payment of one of the shop's sessions whose events never came is applied from the session,
and the refund with it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, update

from . import events, orders, stale_orders, stripe_gateway
from .extensions import db
from .models import EventState, Order, StripeEvent, utcnow

log = logging.getLogger("shop.recovery")
# Always look back at least as far as Stripe keeps retrying a webhook.
DEFAULT_LOOKBACK = timedelta(days=3)
# Events created in the same second as the anchor, or slightly out of clock order.
OVERLAP_SECONDS = 60
# How far back Stripe lists events.
EVENT_HISTORY = timedelta(days=30)
# How long a refund may wait for its payment before Stripe is asked whose payment it is. A
# payment's own events are created before its refund's and are normally delivered within
# seconds; an hour also covers Stripe's first retries of a failed delivery, and a sync has by
# then fetched every event Stripe still lists. Waiting longer only keeps clutter visible.
WAITING_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class FailedEvent:
    event_id: str
    event_type: str
    error: str


@dataclass
class SyncReport:
    fetched: int = 0
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    stale_expired: int = 0
    waiting: int = 0  # events still waiting for their payment after this sync, all told
    failed: list[FailedEvent] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    # One line per open order older than Stripe's event history, reconciled from its session.
    beyond_history: list[str] = field(default_factory=list)
    # One line per payment that refunds waited for past WAITING_GRACE, and what Stripe said of it.
    overdue_waiting: list[str] = field(default_factory=list)
    not_ours: int = 0  # waiting events resolved as another integration's this sync
    lookup_failed: list[str] = field(default_factory=list)  # payments Stripe wasn't asked about: still waiting
    # One line per stale pending order whose Checkout Session Stripe had, and what it said.
    stale_settled: list[str] = field(default_factory=list)
    stale_failed: list[str] = field(default_factory=list)  # stale orders left pending: Stripe couldn't be asked

    def summary(self) -> str:
        summary = (
            f"Fetched {self.fetched} event(s): {self.applied} applied, {self.duplicates} already seen, "
            f"{self.invalid} invalid, {len(self.failed)} failed; {self.waiting} waiting for their payment; "
            f"{self.stale_expired} stale pending order(s) expired."
        )
        if self.stale_failed:
            summary += f" {len(self.stale_failed)} stale order(s) left pending: Stripe could not be asked."
        if self.beyond_history:
            summary += (
                f" {len(self.beyond_history)} open order(s) older than Stripe's {EVENT_HISTORY.days}-day event "
                "history reconciled from their Checkout Sessions."
            )
        if self.overdue_waiting or self.lookup_failed:
            summary += (
                f" {self.not_ours} waiting event(s) found to be another integration's payment;"
                f" {len(self.lookup_failed)} payment(s) could not be looked up at Stripe."
            )
        return summary


def history_start() -> int:
    """Unix time of the oldest event Stripe still lists."""
    return int((utcnow() - EVENT_HISTORY).timestamp())


def sync_window_start() -> int:
    """Unix time to fetch events from: the earliest of three anchors, but never before
    Stripe's event history begins.

    A dropped delivery can be older than one that arrived, and can concern an order that is
    no longer open (the refund of a paid order), so always look back DEFAULT_LOOKBACK; and
    further when the newest processed event (everything after it is unseen) or the oldest
    open order (every event of it is newer than it) is older still.
    """
    newest_event = db.session.scalar(select(func.max(StripeEvent.created)).where(StripeEvent.processed_at.is_not(None)))
    oldest_open = db.session.scalar(select(func.min(Order.created_at)).where(Order.status.in_(orders.OPEN_STATES)))
    anchors = [int((utcnow() - DEFAULT_LOOKBACK).timestamp())]
    if newest_event:
        anchors.append(newest_event)
    if oldest_open is not None:
        anchors.append(int(oldest_open.timestamp()))
    return max(min(anchors) - OVERLAP_SECONDS, history_start())


def sync_with_stripe() -> SyncReport:
    """Pull events from Stripe and feed them, oldest first, through the webhook's own intake;
    then reconcile open orders older than Stripe's event history from their sessions."""
    report = SyncReport()
    start = sync_window_start()
    fetched = list(stripe_gateway.events_since(start))
    report.fetched = len(fetched)
    for event in reversed(fetched):
        _ingest(event, report)
    report.beyond_history = _reconcile_beyond_history(datetime.fromtimestamp(start, UTC))
    _resolve_overdue_waiting(report)
    stale = stale_orders.sweep(timedelta(minutes=current_app.config["STALE_PENDING_MINUTES"]))
    report.stale_expired, report.stale_settled, report.stale_failed = stale.expired, stale.lines, stale.failed
    report.waiting = db.session.scalar(
        select(func.count()).select_from(StripeEvent).where(StripeEvent.state == EventState.WAITING)
    ) or 0
    db.session.commit()
    return report


def _ingest(event: dict, report: SyncReport) -> None:
    try:
        result = events.ingest(event)
    except events.InvalidEvent as exc:
        report.invalid += 1
        log.warning("sync skipped event %s: %s", event.get("id"), exc)
        return
    except Exception as exc:  # recorded on the event's row by the intake; the next event must still be applied
        report.failed.append(FailedEvent(str(event.get("id")), str(event.get("type")), f"{type(exc).__name__}: {exc}"))
        return
    if result.duplicate:
        report.duplicates += 1
    else:
        report.applied += 1
        report.outcomes.append(f"{event['id']} {event['type']}: {result.outcome}")


def _reconcile_beyond_history(before: datetime) -> list[str]:
    """Open orders placed before `before` may have events Stripe no longer lists: read each
    one's Checkout Session back from Stripe and apply what it says.

    An authenticated API answer is as much Stripe's word as a listed event (sync already
    trusts those unsigned). A delayed payment still unpaid can't be told apart from one that
    failed without its events, so that order is flagged for the operator instead.
    """
    stale_open = db.session.scalars(
        select(Order)
        .where(Order.status.in_(orders.OPEN_STATES), Order.created_at < before, Order.stripe_session_id.is_not(None))
        .order_by(Order.created_at)
    ).all()
    db.session.commit()
    lines = []
    for order in stale_open:
        public_id, session_id = order.public_id, order.stripe_session_id
        log.warning("order %s is older than Stripe's event history: reading its Checkout Session", public_id)
        try:
            session = stripe_gateway.retrieve_checkout_session(session_id)
            state = (session.get("status"), session.get("payment_status"))
            outcome = events.apply_session_as_read(session)
            if outcome is None:
                lines.append(f"{public_id}: session {session_id} is {state[0]}, {state[1]}; left as it is")
                continue
            if state == ("complete", "unpaid"):
                _flag_unresolved(order, session)
                outcome = orders.Outcome(f"{outcome.description}; flagged: delayed payment unresolved", order.id)
            lines.append(f"{public_id}: older than Stripe's event history, from its session: {outcome.description}")
        except Exception as exc:  # one order must not stop the others
            db.session.rollback()
            log.error("could not reconcile order %s from its session: %s", public_id, exc)
            lines.append(f"{public_id}: could not read its Checkout Session: {type(exc).__name__}: {exc}")
    return lines


def _resolve_overdue_waiting(report: SyncReport) -> None:
    """Ask Stripe whose payment each refund waiting past WAITING_GRACE refunds.

    No Checkout Session, or one no order has: another integration's payment, so its waiting
    events are not ours. One of the shop's sessions: it is applied as read (a paid session
    pays its order, which applies the waiting refunds in the same transaction). Stripe not
    answering leaves the events waiting for the next sync, and is reported.
    """
    overdue_before = int((utcnow() - WAITING_GRACE).timestamp())
    payment_intents = db.session.scalars(
        select(StripeEvent.waiting_for)
        .where(StripeEvent.state == EventState.WAITING, StripeEvent.created < overdue_before)
        .group_by(StripeEvent.waiting_for)
        .order_by(func.min(StripeEvent.created))
    ).all()
    db.session.commit()
    for payment_intent in payment_intents:
        try:
            session = stripe_gateway.checkout_session_of_payment(payment_intent)
        except stripe_gateway.PaymentProviderError as exc:
            log.error("could not look up the payment %s that refunds wait for: %s", payment_intent, exc)
            report.lookup_failed.append(f"{payment_intent}: could not ask Stripe whose payment it is, still waiting: {exc}")
            continue
        try:
            line = _resolve_payment(payment_intent, session, report)
        except Exception as exc:  # one payment must not stop the others
            db.session.rollback()
            log.exception("could not apply the session of payment %s", payment_intent)
            line = f"still waiting: applying its session failed: {type(exc).__name__}: {exc}"
        report.overdue_waiting.append(f"{payment_intent}: {line}")


def _resolve_payment(payment_intent: str, session: dict | None, report: SyncReport) -> str:
    """Settle the events waiting for one payment by what Stripe says of its session; a line for the report."""
    ours = session is not None and _is_ours(session)
    if session is not None and not ours and _names_an_order(session):
        # Not proof of anything either way: an operator decides.
        return (
            f"still waiting: its session {session['id']} names order {session['client_reference_id']}, "
            "which was never given that session: check it in the Stripe Dashboard"
        )
    if not ours:
        why = (
            "Stripe has no Checkout Session for this payment" if session is None
            else f"its Checkout Session {session['id']} is not one of this shop's"
        )
        resolved = db.session.execute(
            update(StripeEvent)
            .where(StripeEvent.state == EventState.WAITING, StripeEvent.waiting_for == payment_intent)
            .values(state=EventState.NOT_OURS, outcome=f"not ours: {why}", processed_at=utcnow(), payload=None)
        ).rowcount
        db.session.commit()
        report.not_ours += resolved
        log.info("%d event(s) waiting for %s are not ours: %s", resolved, payment_intent, why)
        return f"not ours ({why}): {resolved} event(s) resolved"
    outcome = events.apply_session_as_read(session)
    state = f"{session.get('status')}, {session.get('payment_status')}"
    if outcome is None:
        return f"its session {session['id']} is {state}; still waiting"
    return f"its session {session['id']} ({state}) applied: {outcome.description}"


def _is_ours(session: dict) -> bool:
    """The session is one an order of this shop was given (the same test the webhook applies)."""
    return db.session.scalar(select(Order.id).where(Order.stripe_session_id == session["id"])) is not None


def _names_an_order(session: dict) -> bool:
    """The session's `client_reference_id` is one of this shop's order ids."""
    reference = session.get("client_reference_id")
    return isinstance(reference, str) and db.session.scalar(select(Order.id).where(Order.public_id == reference)) is not None


def _flag_unresolved(order: Order, session: dict) -> None:
    reason = (
        f"Stripe no longer lists this order's events and its delayed payment {session.get('payment_intent')} "
        "is unresolved: check it in the Stripe Dashboard"
    )
    if order.review_reason != reason:
        orders.flag_for_review(order, reason)
        db.session.commit()


class NothingToRetry(LookupError):
    """No such event, or it is already final."""


def retry_event(event_id: str) -> events.IngestResult:
    """Handle a failed or waiting event again, from the payload kept on its row.

    Raises NothingToRetry, or whatever the handling raises (recorded on the row again).
    """
    row = db.session.execute(
        select(StripeEvent.state, StripeEvent.payload).where(StripeEvent.id == event_id)
    ).one_or_none()
    db.session.rollback()
    if row is None or row.state in events.FINAL_STATES or not row.payload:
        raise NothingToRetry(event_id)
    return events.ingest(json.loads(row.payload))
