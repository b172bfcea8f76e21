"""Webhook attempts for one Checkout Session, for the developer waiting on the success page.

Stripe's Dashboard lists each event's delivery attempts; offline, this answers the same
question in JSON at `/_stripe/deliveries/<session id>`: are this session's events failing
to reach the shop, where to, with what answer, and when is the next attempt.
"""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import or_, select

from shop.extensions import db

from .addresses import delivery_url
from .models import Delivery, Event

bp = Blueprint("stripe_emulator_deliveries", __name__, url_prefix="/_stripe")


@bp.get("/deliveries/<session_id>")
def failing(session_id: str) -> ResponseReturnValue:
    """The session's undelivered events whose last attempt failed; `failing` if there are any."""
    settings = current_app.extensions["stripe_emulator"].settings
    rows = db.session.execute(
        select(Delivery, Event.type)
        .join(Event, Event.id == Delivery.event_id)
        .where(
            Event.object["id"].as_string() == session_id,
            Delivery.status.in_(("pending", "failed")),
            or_(Delivery.last_status.is_not(None), Delivery.last_error.is_not(None)),
        )
        .order_by(Delivery.id)
    ).all()
    now = time.time()
    deliveries = [_describe(delivery, event_type, delivery_url(settings.webhook_url, delivery.url), now)
                  for delivery, event_type in rows]
    response = jsonify(failing=bool(deliveries), deliveries=deliveries)
    response.headers["Cache-Control"] = "no-store"
    return response


def _describe(delivery: Delivery, event_type: str, url: str, now: float) -> dict[str, Any]:
    return {
        "event": event_type,
        "url": url,
        "attempts": delivery.attempts,
        "answer": delivery.last_error or f"answered HTTP {delivery.last_status}",
        # None: no further attempt (`flask stripe sync` still applies the event).
        "next_attempt_in": max(0.0, round(delivery.due_at - now, 1)) if delivery.status == "pending" else None,
    }
