"""Concurrent webhook deliveries against a real multi-worker gunicorn on PostgreSQL.

Orders are placed in-process through the real checkout (same database); the events are
then POSTed over HTTP to gunicorn from many threads released together by a barrier.
"""
from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from shop.extensions import db
from shop.models import Order, StripeEvent
from tests.helpers import ShopClient, get_order, refund_event, session_event, sign, webhook_secret
from tests.reliability.conftest import LiveServer
from tests.reliability.reference import KINDS, ModelEvent, final_state

pytestmark = pytest.mark.postgres_only


def post_signed(url: str, secret: str, body: str, barrier: threading.Barrier) -> tuple[int, dict[str, Any]]:
    """Wait for every sender, then deliver one signed webhook; returns (status, JSON answer)."""
    request = urllib.request.Request(
        url + "/webhooks/stripe",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)},
        method="POST",
    )
    barrier.wait(timeout=30)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"message": error.read().decode(errors="replace")}


def deliver_together(server: LiveServer, app: Flask, events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Deliver all events at the same moment, one thread each."""
    barrier = threading.Barrier(len(events))
    secret = webhook_secret(app)
    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        futures = [pool.submit(post_signed, server.url, secret, json.dumps(event), barrier) for event in events]
        return [future.result() for future in futures]


def event_rows(app: Flask, order: Order) -> list[StripeEvent]:
    with app.app_context():
        rows = db.session.scalars(select(StripeEvent).where(StripeEvent.order_id == order.id)).all()
        db.session.expunge_all()
        return list(rows)


def model_event(order: Order, event: ModelEvent) -> dict[str, Any]:
    event_type, payment_status = KINDS[event.kind]
    return session_event(order, event_type, payment_status=payment_status)


@pytest.fixture
def server(live_server: LiveServer, database_url: str) -> LiveServer:
    assert database_url == live_server.database_url
    return live_server


def test_fifty_simultaneous_deliveries_of_one_event_pay_once(server, app, shop):
    order = shop.start({"field-notebook": 2, "canvas-tote": 1})
    event = session_event(order, "checkout.session.completed")

    answers = deliver_together(server, app, [event] * 50)

    assert [status for status, _ in answers] == [200] * 50, answers
    first = [body for _, body in answers if body["duplicate"] is False]
    assert first == [{"message": "order paid", "duplicate": False}]
    assert all(body["message"] == "order paid" for _, body in answers)  # duplicates report the recorded outcome
    paid = get_order(app, order.public_id)
    assert paid.status == "paid" and paid.paid_at is not None
    assert [(row.id, row.outcome) for row in event_rows(app, paid)] == [(event["id"], "order paid")]


def test_completed_racing_expired_always_ends_paid(server, app, shop):
    for _ in range(20):
        order = shop.start({"enamel-mug": 1})
        completed = session_event(order, "checkout.session.completed")
        expired = session_event(order, "checkout.session.expired")

        answers = deliver_together(server, app, [completed, expired])

        assert [status for status, _ in answers] == [200, 200], answers
        assert get_order(app, order.public_id).status == "paid"
        assert len(event_rows(app, order)) == 2


RACES = {
    "unpaid completion vs async success": ([], ("completed_unpaid", "async_succeeded")),
    "async failure vs async success": (["completed_unpaid"], ("async_failed", "async_succeeded")),
    "paid completion vs async failure": ([], ("completed_paid", "async_failed")),
    "expiry vs unpaid completion": ([], ("expired", "completed_unpaid")),
}


@pytest.mark.parametrize("name", RACES)
def test_two_events_racing_end_as_some_serial_order_would(server, app, name):
    before, racing = RACES[name]
    prefix = [ModelEvent(kind) for kind in before]
    pair = [ModelEvent(kind) for kind in racing]
    serial_outcomes = {final_state(prefix + list(order)) for order in itertools.permutations(pair)}
    for _ in range(8):
        # A browser of its own for each order: one whose bank transfer is still processing may not
        # start another checkout.
        order = ShopClient(app).start({"canvas-tote": 1})
        for event in prefix:
            assert deliver_together(server, app, [model_event(order, event)])[0][0] == 200

        answers = deliver_together(server, app, [model_event(order, event) for event in pair])

        assert [status for status, _ in answers] == [200, 200], answers
        final = get_order(app, order.public_id)
        assert final.status in serial_outcomes, (final.status, serial_outcomes)
        if final.status == "paid":
            assert final.paid_at is not None and final.payment_intent_id is not None
        assert len(event_rows(app, order)) == len(prefix) + 2


def test_refund_racing_its_payment_is_applied_exactly_once(server, app, shop):
    """The refund either finds the paid order or waits and is applied by the payment: never lost."""
    for round_number in range(20):
        order = shop.start({"enamel-mug": 1})  # 2400 usd
        refunded = 2400 if round_number % 2 else 1000
        payment_intent = f"pi_race_{round_number}_{order.public_id[-8:]}"
        payment = session_event(order, "checkout.session.completed", payment_intent=payment_intent)
        refund = refund_event(payment_intent, refunded, 2400)

        answers = deliver_together(server, app, [payment, refund])

        assert [status for status, _ in answers] == [200, 200], answers
        final = get_order(app, order.public_id)
        assert (final.status, final.amount_refunded) == (
            "refunded" if refunded == 2400 else "partially_refunded", refunded
        ), answers
        assert sorted(row.state for row in event_rows(app, order)) == ["applied", "applied"]
