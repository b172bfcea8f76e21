"""The webhook: verified, recorded once, and the only thing that moves an order forward."""
from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import func, select, text

from shop import events
from shop.extensions import db
from shop.models import EventState, StripeEvent
from tests.helpers import (
    ShopClient,
    WireTrace,
    count,
    get_order,
    post_event,
    refund_event,
    session_event,
    sign,
    snapshot,
    webhook_secret,
)


@pytest.fixture
def order(app, shop):
    return shop.start({"field-notebook": 2, "canvas-tote": 1})


def status_of(app, order) -> str:
    return get_order(app, order.public_id).status


def event_row(app, event_id):
    with app.app_context():
        row = db.session.get(StripeEvent, event_id)
        return None if row is None else (row.type, row.processed_at is not None, row.outcome)


def test_completed_and_paid_marks_the_order_paid(app, order):
    event = session_event(order, "checkout.session.completed")
    response = post_event(app, event)
    assert response.status_code == 200
    paid = get_order(app, order.public_id)
    assert paid.status == "paid"
    assert paid.paid_at is not None
    assert paid.customer_email == "shopper@example.com"
    assert paid.payment_intent_id == event["data"]["object"]["payment_intent"]
    assert event_row(app, event["id"]) == ("checkout.session.completed", True, "order paid")


def test_duplicate_delivery_is_acknowledged_and_has_no_effect(app, order):
    event = session_event(order, "checkout.session.completed")
    post_event(app, event)
    before = snapshot(app)
    again = post_event(app, event)
    assert again.status_code == 200
    assert again.json["duplicate"] is True
    assert snapshot(app) == before
    assert count(app, StripeEvent) == 1


def test_unpaid_completion_waits_for_the_async_result(app, order):
    post_event(app, session_event(order, "checkout.session.completed", payment_status="unpaid"))
    assert status_of(app, order) == "processing"
    post_event(app, session_event(order, "checkout.session.async_payment_succeeded"))
    assert status_of(app, order) == "paid"


def test_async_failure_marks_the_order_failed(app, order):
    post_event(app, session_event(order, "checkout.session.completed", payment_status="unpaid"))
    post_event(app, session_event(order, "checkout.session.async_payment_failed"))
    assert status_of(app, order) == "failed"


def test_expired_session_expires_the_order(app, order):
    post_event(app, session_event(order, "checkout.session.expired"))
    assert status_of(app, order) == "expired"


@pytest.mark.parametrize(
    "late", ["checkout.session.expired", "checkout.session.async_payment_failed", "checkout.session.completed"]
)
def test_paid_is_final(app, order, late):
    post_event(app, session_event(order, "checkout.session.completed"))
    response = post_event(app, session_event(order, late, payment_status="unpaid"))
    assert response.status_code == 200
    assert status_of(app, order) == "paid"


@pytest.mark.parametrize(
    "field, value", [("amount_total", 1), ("amount_total", 6801), ("currency", "eur")]
)
def test_payment_that_does_not_match_the_order_is_flagged_not_paid(app, order, field, value):
    response = post_event(app, session_event(order, "checkout.session.completed", **{field: value}))
    assert response.status_code == 200
    flagged = get_order(app, order.public_id)
    assert flagged.status == "awaiting_payment"
    assert flagged.paid_at is None
    assert "Stripe reports" in flagged.review_reason


def test_session_naming_another_order_is_flagged_not_paid(app, order):
    post_event(app, session_event(order, "checkout.session.completed", client_reference_id="ord_" + "x" * 22))
    flagged = get_order(app, order.public_id)
    assert flagged.status == "awaiting_payment"
    assert "names another order" in flagged.review_reason


def test_event_for_an_unknown_session_is_recorded_and_acknowledged(app, order):
    event = session_event(order, "checkout.session.completed", id="cs_test_from_stripe_trigger")
    response = post_event(app, event)
    assert response.status_code == 200
    assert event_row(app, event["id"])[1] is True
    assert status_of(app, order) == "awaiting_payment"


def test_unhandled_event_types_are_acknowledged(app, order):
    event = session_event(order, "payment_intent.created")
    event["data"]["object"] = {"id": "pi_123", "object": "payment_intent"}
    response = post_event(app, event)
    assert response.status_code == 200
    assert "not handled" in response.json["message"]


def test_processing_error_answers_500_and_leaves_the_event_for_a_retry(app, order, monkeypatch):
    event = session_event(order, "checkout.session.completed")

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("shop.orders.apply_session_event", broken)
    monkeypatch.setattr("shop.paid_sessions.PAY_AND_RECORD", text("SELECT 1/0"))  # and the fast path's database fails
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as production would, not raise into the test
    response = post_event(app, event)
    assert response.status_code == 500
    assert event_row(app, event["id"]) == ("checkout.session.completed", False, None)
    with app.app_context():
        failed = db.session.get(StripeEvent, event["id"])
        assert (failed.state, failed.error, failed.failures) == ("failed", "RuntimeError: database went away", 1)
    assert status_of(app, order) == "awaiting_payment"

    monkeypatch.undo()
    retry = post_event(app, event)
    assert retry.status_code == 200
    assert status_of(app, order) == "paid"
    assert event_row(app, event["id"]) == ("checkout.session.completed", True, "order paid")


@pytest.mark.postgres_only
def test_paid_completion_takes_one_database_round_trip(app, order, tmp_path):
    """The common case goes over the wire as one statement, its own transaction (libpq's own trace)."""
    with WireTrace(app, str(tmp_path / "libpq.trace")) as wire:
        for _ in range(6):  # psycopg prepares a statement on its fifth run
            other = ShopClient(app).start({"enamel-mug": 1})
            wire.traffic(lambda other=other: post_event(app, session_event(other, "checkout.session.completed")))
        round_trips, _ = wire.traffic(lambda: post_event(app, session_event(order, "checkout.session.completed")))
    assert round_trips == 1
    assert status_of(app, order) == "paid"


@pytest.mark.postgres_only
def test_a_refund_that_decides_to_wait_while_its_payment_waits_for_the_lock_is_applied(app, order, monkeypatch):
    """A refund's delivery finds no paid order, so it records that it waits for the payment;
    before it commits, the payment's delivery arrives and waits for the payment's lock. Once
    the refund commits, the payment must see it (a look taken before the lock would not) and
    apply it: the order ends refunded, never paid with a refund waiting forever."""
    payment_intent = "pi_refund_first_" + order.public_id[-8:]
    payment = session_event(order, "checkout.session.completed", payment_intent=payment_intent)
    total = get_order(app, order.public_id).amount_total
    refund = refund_event(payment_intent, total, total)
    refund_waits, let_refund_commit = threading.Event(), threading.Event()
    record = events._record

    def record_then_hold(event, outcome):
        record(event, outcome)
        if outcome.state == EventState.WAITING:
            refund_waits.set()
            let_refund_commit.wait(timeout=30)

    monkeypatch.setattr(events, "_record", record_then_hold)
    answers: dict[str, int] = {}

    def deliver(name: str, event: dict) -> None:
        answers[name] = post_event(app, event).status_code

    refund_thread = threading.Thread(target=deliver, args=("refund", refund))
    refund_thread.start()
    assert refund_waits.wait(timeout=30)
    payment_thread = threading.Thread(target=deliver, args=("payment", payment))
    payment_thread.start()
    with app.app_context():  # the payment is waiting for the lock the refund holds
        for _ in range(300):
            blocked = db.session.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
            db.session.rollback()
            if blocked:
                break
            time.sleep(0.01)
    assert blocked, "the payment's delivery never waited for the refund's lock"
    let_refund_commit.set()
    refund_thread.join(timeout=30)
    payment_thread.join(timeout=30)

    assert answers == {"refund": 200, "payment": 200}
    final = get_order(app, order.public_id)
    assert (final.status, final.amount_refunded) == ("refunded", total)
    with app.app_context():
        states = db.session.scalars(select(StripeEvent.state).where(StripeEvent.id.in_([payment["id"], refund["id"]])))
        assert sorted(states) == ["applied", "applied"]


@pytest.mark.postgres_only
def test_database_failure_in_the_fast_path_leaves_the_event_to_the_general_intake(app, order, monkeypatch):
    """The connection dies during the fast path's statement: nothing half-done, the event applied once."""
    monkeypatch.setattr("shop.paid_sessions.PAY_AND_RECORD", select(func.pg_terminate_backend(func.pg_backend_pid())))
    event = session_event(order, "checkout.session.completed")
    response = post_event(app, event)
    assert response.status_code == 200 and response.json["duplicate"] is False
    assert status_of(app, order) == "paid"
    assert event_row(app, event["id"]) == ("checkout.session.completed", True, "order paid")
    assert count(app, StripeEvent) == 1
    monkeypatch.undo()
    assert post_event(app, event).json["duplicate"] is True


def test_without_a_secret_nothing_is_processed(app, order):
    event = session_event(order, "checkout.session.completed")
    secret = webhook_secret(app)
    app.config["STRIPE_WEBHOOK_SECRETS"] = []
    response = post_event(app, event, secret=secret)
    assert response.status_code == 503
    assert status_of(app, order) == "awaiting_payment"
    assert count(app, StripeEvent) == 0


def test_rotated_secrets_are_all_accepted(app, order):
    old = webhook_secret(app)
    app.config["STRIPE_WEBHOOK_SECRETS"] = ["whsec_new_one", old]
    assert post_event(app, session_event(order, "checkout.session.completed"), secret="whsec_new_one").status_code == 200
    assert status_of(app, order) == "paid"


def _raw(app, body: bytes | str, headers: dict[str, str]):
    return app.test_client().post("/webhooks/stripe", data=body, headers=headers)


def _signed(app, body: str, **overrides) -> dict[str, str]:
    return {"Content-Type": "application/json", "Stripe-Signature": sign(body, webhook_secret(app)), **overrides}


def _bad_webhook_requests(app, order):
    """Each a (name, body, headers, expected status): every one must change nothing."""
    good = json.dumps(session_event(order, "checkout.session.completed"))

    def event_with(mutate) -> str:
        event = session_event(order, "checkout.session.completed")
        mutate(event)
        return json.dumps(event)

    def drop(*path):
        def mutate(event):
            target = event
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
        return mutate

    missing_fields = {
        "no id": event_with(drop("id")),
        "no type": event_with(drop("type")),
        "no data": event_with(drop("data")),
        "no object": event_with(drop("data", "object")),
        "no session id": event_with(drop("data", "object", "id")),
        "no amount": event_with(drop("data", "object", "amount_total")),
        "no currency": event_with(drop("data", "object", "currency")),
        "no payment status": event_with(drop("data", "object", "payment_status")),
        "amount as text": event_with(lambda e: e["data"]["object"].update(amount_total="6800")),
        "not an event": event_with(lambda e: e.update(object="charge")),
        "non-checkout object": event_with(lambda e: e["data"].update(object={"id": "pi_1", "object": "payment_intent"})),
        "JSON list": json.dumps([session_event(order, "checkout.session.completed")]),
    }
    cases = [
        ("no signature", good, {"Content-Type": "application/json"}, 400),
        ("garbage signature", good, {"Content-Type": "application/json", "Stripe-Signature": "nonsense"}, 400),
        ("signed with another secret", good, {"Content-Type": "application/json", "Stripe-Signature": sign(good, "whsec_attacker")}, 400),
        ("stale replay", good, {"Content-Type": "application/json", "Stripe-Signature": sign(good, webhook_secret(app), timestamp=int(time.time()) - 301)}, 400),
        ("body changed after signing", good.replace("6800", "1"), _signed(app, good), 400),
        ("malformed JSON", "{not json", _signed(app, "{not json"), 400),
        ("wrong content type", good, _signed(app, good, **{"Content-Type": "text/plain"}), 415),
        ("form content type", good, _signed(app, good, **{"Content-Type": "application/x-www-form-urlencoded"}), 415),
        ("too large", good + " " * (70 * 1024), _signed(app, good + " " * (70 * 1024)), 413),
    ]
    cases += [(name, body, _signed(app, body), 400) for name, body in missing_fields.items()]
    return cases


BAD_WEBHOOK_NAMES = [
    "no signature", "garbage signature", "signed with another secret", "stale replay", "body changed after signing",
    "malformed JSON", "wrong content type", "form content type", "too large", "no id", "no type", "no data",
    "no object", "no session id", "no amount", "no currency", "no payment status", "amount as text", "not an event",
    "non-checkout object", "JSON list",
]


@pytest.mark.parametrize("name", BAD_WEBHOOK_NAMES)
def test_bad_webhook_request_gets_4xx_and_changes_nothing(app, order, name):
    cases = {case[0]: case[1:] for case in _bad_webhook_requests(app, order)}
    body, headers, expected = cases[name]
    before = snapshot(app)
    response = _raw(app, body, headers)
    assert response.status_code == expected, response.get_data(as_text=True)
    assert response.is_json and response.json["message"]
    assert snapshot(app) == before


def test_events_are_stored_once_per_id(app, order):
    events = [session_event(order, "checkout.session.completed") for _ in range(3)]
    for event in events + events:
        assert post_event(app, event).status_code == 200
    with app.app_context():
        ids = db.session.scalars(select(StripeEvent.id)).all()
    assert sorted(ids) == sorted(e["id"] for e in events)
