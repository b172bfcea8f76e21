"""Recovery for missed webhooks and interrupted checkouts (`flask stripe sync`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from . import events, orders, stripe_gateway
from .extensions import db
from .models import Order, StripeEvent, utcnow

log = logging.getLogger("shop.recovery")
# Always look back at least as far as Stripe keeps retrying a webhook.
DEFAULT_LOOKBACK = timedelta(days=3)
# Events created in the same second as the anchor, or slightly out of clock order.
OVERLAP_SECONDS = 60


@dataclass
class SyncReport:
    fetched: int = 0
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    stale_expired: int = 0
    outcomes: list[str] = field(default_factory=list)


def sync_window_start() -> int:
    """Unix time to fetch events from: the earliest of three anchors.

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
    return min(anchors) - OVERLAP_SECONDS


def sync_with_stripe() -> SyncReport:
    """Pull events from Stripe and feed them, oldest first, through the webhook's own intake."""
    report = SyncReport()
    start = sync_window_start()
    fetched = list(stripe_gateway.events_since(start))
    report.fetched = len(fetched)
    for event in reversed(fetched):
        try:
            result = events.ingest(event)
        except events.InvalidEvent as exc:
            report.invalid += 1
            log.warning("sync skipped event %s: %s", event.get("id"), exc)
            continue
        if result.duplicate:
            report.duplicates += 1
        else:
            report.applied += 1
            report.outcomes.append(f"{event['id']} {event['type']}: {result.outcome}")
    report.stale_expired = orders.expire_stale_pending(timedelta(minutes=current_app.config["STALE_PENDING_MINUTES"]))
    db.session.commit()
    return report
