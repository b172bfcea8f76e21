"""Test helpers: a shopper's browser over the Flask test client, and Stripe-signed events."""
from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
from flask import Flask
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import Order, StripeEvent

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
TOKEN_FIELD = re.compile(r'name="checkout_token" value="([^"]+)"')
STRIPE_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "stripe"


def stripe_reference(name: str) -> Path:
    """A file of Stripe's published spec and fixtures, read in place beside the repo (../shared/stripe).

    The calling test skips, saying which file is missing, when it is absent.
    """
    path = STRIPE_REFERENCE / name
    if not path.is_file():
        pytest.skip(f"Stripe's published {name} is not at {path} (../shared/stripe, beside the repo)")
    return path


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class ShopClient:
    """One browser: its own cookies, and the home page's form fields."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.http = app.test_client()

    def form_fields(self) -> dict[str, str]:
        page = self.http.get("/").get_data(as_text=True)
        return {"csrf_token": CSRF_FIELD.search(page)[1], "checkout_token": TOKEN_FIELD.search(page)[1]}

    def checkout(self, quantities: dict[str, Any], fields: dict[str, str] | None = None, **extra: Any):
        data = {**(fields or self.form_fields()), **{f"quantity-{slug}": q for slug, q in quantities.items()}, **extra}
        return self.http.post("/checkout", data=data)

    def start(self, quantities: dict[str, Any]) -> Order:
        response = self.checkout(quantities)
        assert response.status_code == 303, response.get_data(as_text=True)
        return latest_order(self.app)


def latest_order(app: Flask) -> Order:
    with app.app_context():
        order = db.session.scalar(select(Order).order_by(Order.id.desc()))
        assert order is not None
        db.session.expunge(order)
        return order


def get_order(app: Flask, public_id: str) -> Order:
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.public_id == public_id))
        assert order is not None
        _ = order.items
        db.session.expunge(order)
        return order


def count(app: Flask, model: type) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model)) or 0


def snapshot(app: Flask) -> list[tuple]:
    """Everything a bad request must leave untouched: orders and recorded events."""
    with app.app_context():
        orders = db.session.execute(
            select(Order.public_id, Order.status, Order.amount_total, Order.review_reason, Order.paid_at).order_by(Order.id)
        ).all()
        events = db.session.execute(select(StripeEvent.id, StripeEvent.processed_at)).all()
        return [tuple(row) for row in orders] + [tuple(row) for row in events]


def stripe_event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A Stripe event envelope, as delivered now, around one object."""
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def session_event(order: Order, event_type: str, **session_fields: Any) -> dict[str, Any]:
    """A Stripe-shaped checkout.session event for the given order."""
    session = {
        "id": order.stripe_session_id,
        "object": "checkout.session",
        "client_reference_id": order.public_id,
        "metadata": {"order_id": order.public_id},
        "amount_total": order.amount_total,
        "currency": order.currency,
        "mode": "payment",
        "status": "expired" if event_type.endswith("expired") else "complete",
        "payment_status": "paid" if event_type.endswith(("completed", "succeeded")) else "unpaid",
        "payment_intent": None if event_type.endswith("expired") else "pi_" + secrets.token_hex(8),
        "customer_details": {"email": "shopper@example.com"},
        **session_fields,
    }
    return stripe_event(event_type, session)


def webhook_secret(app: Flask) -> str:
    return app.config["STRIPE_WEBHOOK_SECRETS"][0]


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def post_event(app: Flask, event: dict[str, Any] | str, secret: str | None = None, **headers: str):
    """Deliver an event to the webhook as Stripe would: raw JSON body, signed."""
    body = event if isinstance(event, str) else json.dumps(event)
    signature = sign(body, secret or webhook_secret(app))
    return app.test_client().post(
        "/webhooks/stripe",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature, **headers},
    )


class RecordingHTTPClient(stripe.HTTPClient):
    """Wraps the SDK's transport: records every request and can inject failures first.

    `failures` is consumed one per request: "timeout" and "refused" raise the SDK's
    connection error, "500"/"503"/"401" answer with that status, before anything reaches
    the API behind.
    """

    name = "recording"

    def __init__(self, inner: stripe.HTTPClient, failures: list[str] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.failures = list(failures or [])
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        self.requests.append((method, url, dict(headers or {}), post_data))
        if self.failures:
            failure = self.failures.pop(0)
            if failure in ("timeout", "refused"):
                raise stripe.APIConnectionError(f"simulated {failure}", should_retry=True)
            body = json.dumps({"error": {"type": "api_error", "message": f"simulated {failure}"}})
            return body, int(failure), {"request-id": "req_simulated"}
        return self.inner.request(method, url, headers, post_data)

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        raise NotImplementedError

    def close(self) -> None:
        self.inner.close()

    def posts_to(self, path_suffix: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [r for r in self.requests if r[0] == "post" and urlsplit(r[1]).path.endswith(path_suffix)]


def record_stripe_calls(app: Flask, failures: list[str] | None = None) -> RecordingHTTPClient:
    recorder = RecordingHTTPClient(app.extensions["stripe_http_client"], failures)
    app.extensions["stripe_http_client"] = recorder
    return recorder


# What a shopper types into the hosted page's shipping address fields.
SHIPPING_ADDRESS = {
    "name": "Ada Lovelace", "country": "US", "line1": "12 Analytical Row", "line2": "Apt 3",
    "city": "Springfield", "state": "IL", "postal_code": "62704",
}


def pay(shop: ShopClient, checkout_url: str, card: str = "4242 4242 4242 4242", method: str = "card"):
    """Fill in the emulator's hosted checkout page as a shopper would."""
    form = {"email": "shopper@example.com", "method": method, "card": card, "expiry": "12 / 34", "cvc": "123", **SHIPPING_ADDRESS}
    return shop.http.post(path_of(checkout_url), data=form)


def refund_event(payment_intent: str | None, amount_refunded: int, amount: int, currency: str = "usd") -> dict[str, Any]:
    """A Stripe-shaped `charge.refunded` event for a charge of `payment_intent` (None: a legacy charge)."""
    charge = {
        "id": "ch_" + secrets.token_hex(12),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "currency": currency,
        "payment_intent": payment_intent,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
        "metadata": {},
    }
    return stripe_event("charge.refunded", charge)


def event_state(app: Flask, event_id: str) -> tuple[str, str | None, int | None] | None:
    """(state, waiting_for, order_id) of a recorded event, or None when it was never recorded."""
    with app.app_context():
        row = db.session.get(StripeEvent, event_id)
        return None if row is None else (row.state, row.waiting_for, row.order_id)


def stripe_sdk(app: Flask) -> stripe.StripeClient:
    """The official SDK pointed where the app's is: for a test acting as the Stripe Dashboard would."""
    return stripe.StripeClient(
        app.config["STRIPE_SECRET_KEY"],
        base_addresses={"api": app.config["STRIPE_API_BASE"]},
        http_client=app.extensions["stripe_http_client"],
    )


class WireTrace:
    """What the app's PostgreSQL connections send and receive, from libpq's protocol trace.

    A round trip ends with the server's ReadyForQuery; a Parse is a statement parsed again.
    Connections opened before `start()` are closed, so every one the app uses is traced.
    """

    def __init__(self, app: Flask, path: str) -> None:
        self.app, self.path, self.fd = app, path, None

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        from psycopg import pq

        dbapi_connection.pgconn.trace(self.fd)
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def __enter__(self) -> WireTrace:
        import os

        from sqlalchemy import event

        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        with self.app.app_context():
            db.engine.dispose()
            event.listen(db.engine, "connect", self._trace)
        return self

    def __exit__(self, *exc: Any) -> None:
        import os

        from sqlalchemy import event

        with self.app.app_context():
            event.remove(db.engine, "connect", self._trace)
            db.engine.dispose()
        os.close(self.fd)

    def traffic(self, action: Any) -> tuple[int, int]:
        """Round trips and Parse messages while `action()` runs."""
        with open(self.path, "rb") as trace:
            start = trace.seek(0, 2)
        action()
        with open(self.path, "rb") as trace:
            trace.seek(start)
            sent = trace.read()
        return sent.count(b"\tReadyForQuery\t"), sent.count(b"\tParse\t")

    def statements_by_round_trip(self, action: Any) -> list[list[str]]:
        """The statements sent while `action()` runs, one list per round trip.

        A prepared statement run again is named by its text, from the Parse that prepared it.
        """
        import re

        with open(self.path, "rb") as trace:
            start = trace.seek(0, 2)
        action()
        with open(self.path, "rb") as trace:
            whole = trace.read()
        text, recent = whole.decode(errors="replace"), whole[start:].decode(errors="replace")
        message = re.compile(r'^([FB])\t\d+\t(\w+)\t?(.*?)(?=^[FB]\t\d+\t|\Z)', re.M | re.S)
        prepared = {m[1]: m[2] for m in re.finditer(r'\tParse\t "(\w+)" "(.*?)" \d', text, re.S)}
        trips: list[list[str]] = [[]]
        for side, kind, rest in message.findall(recent):
            if side == "B" and kind == "ReadyForQuery":
                trips.append([])
            elif side == "F" and kind == "Query":
                trips[-1].append(re.match(r'\s*"(.*)"\s*$', rest, re.S)[1])
            elif side == "F" and kind == "Parse" and rest.startswith(' "" '):
                trips[-1].append(re.match(r' "" "(.*?)" \d', rest, re.S)[1])
            elif side == "F" and kind == "Bind" and not rest.startswith(' "" ""'):
                trips[-1].append(prepared[re.match(r' "" "(\w+)"', rest)[1]])
        return [trip for trip in trips if trip]


def patch_order_handler(monkeypatch: Any, name: str, replacement: Any) -> None:
    """Replace a handler in `shop.orders` (to inject a fault) for every event.

    The webhook's fast path (`shop.paid_sessions`) pays the common case without calling the
    handlers, so it steps aside here and every event meets the replacement. Its own faults
    are tested in test_webhook.py.
    """
    from shop import orders, paid_sessions

    monkeypatch.setattr(orders, name, replacement)
    monkeypatch.setattr(paid_sessions, "try_paying", lambda event: None)


def refund_object_event(
    event_type: str,
    refund_id: str,
    payment_intent: str,
    amount: int,
    status: str,
    created: int,
    failure_reason: str | None = None,
    currency: str = "usd",
) -> dict[str, Any]:
    """A `refund.*` or `charge.refund.updated` event carrying one refund, created at `created`."""
    refund = {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": "ch_" + secrets.token_hex(12),
        "created": created - 5,
        "currency": currency,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }
    if failure_reason:
        refund["failure_reason"] = failure_reason
    return stripe_event(event_type, refund) | {"created": created}


def dispute_event(
    event_type: str,
    dispute_id: str,
    payment_intent: str,
    status: str,
    created: int,
    amount: int = 4800,
    is_charge_refundable: bool = False,
    balance_transactions: tuple[tuple[int, int], ...] = (),
    due_by: int = 1_900_000_000,
) -> dict[str, Any]:
    """A `charge.dispute.*` event; `balance_transactions` as (amount, fee) pairs."""
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [
            {"id": "txn_" + secrets.token_hex(8), "object": "balance_transaction", "amount": value, "fee": fee,
             "currency": "usd", "reporting_category": "dispute" if value < 0 else "dispute_reversal"}
            for value, fee in balance_transactions
        ],
        "charge": "ch_" + secrets.token_hex(12),
        "created": created,
        "currency": "usd",
        "evidence_details": {"due_by": due_by, "has_evidence": False, "past_due": False, "submission_count": 0},
        "is_charge_refundable": is_charge_refundable,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
    }
    return stripe_event(event_type, dispute) | {"created": created}
