"""Faults while paying: Stripe unreachable or slow, lost answers, a failing database, a crash."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import stripe
import stripe._http_client
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from shop import orders, stripe_emulator, stripe_gateway
from shop.extensions import db
from shop.models import Order, Product, StripeEvent
from shop.stripe_emulator import api as emulator_api
from shop.stripe_emulator.models import CheckoutSession, Delivery
from tests.helpers import (
    RecordingHTTPClient,
    count,
    get_order,
    latest_order,
    patch_order_handler,
    pay,
    record_stripe_calls,
)
from tests.reliability.conftest import run_sync


def emulator_session_ids(app: Flask) -> list[str]:
    """Every Checkout Session the (emulated) Stripe account holds."""
    with app.app_context():
        return list(db.session.scalars(select(CheckoutSession.id)))


def idempotency_keys(recorder: RecordingHTTPClient) -> list[str]:
    return [headers["Idempotency-Key"] for _, _, headers, _ in recorder.posts_to("/v1/checkout/sessions")]


def assert_pays_normally(app: Flask, shop, order: Order) -> None:
    assert pay(shop, order.checkout_url).status_code == 303
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "paid"


@pytest.fixture
def retrying_app(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The SDK retries as in production (2 retries), without the backoff sleeps."""
    app.config["STRIPE_MAX_NETWORK_RETRIES"] = 2
    monkeypatch.setattr(stripe._http_client.HTTPClient, "_sleep_time_seconds", lambda self, num_retries: 0)
    return app


@pytest.mark.parametrize("failures", [["timeout", "timeout"], ["refused", "500"], ["503", "timeout"]])
def test_retried_checkout_reuses_its_idempotency_key_and_makes_one_session(retrying_app, shop, failures):
    app = retrying_app
    recorder = record_stripe_calls(app, failures)

    order = shop.start({"enamel-mug": 2})

    assert idempotency_keys(recorder) == [f"checkout-session-{order.public_id}"] * 3
    assert order.status == "awaiting_payment"
    assert emulator_session_ids(app) == [order.stripe_session_id]
    assert count(app, Order) == 1
    assert_pays_normally(app, shop, order)


class AnswerLostOnce(RecordingHTTPClient):
    """The first request reaches Stripe and is carried out, but its answer never comes back."""

    def __init__(self, inner: stripe.HTTPClient) -> None:
        super().__init__(inner)
        self.answers: list[tuple[str, int, Any]] = []

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        answer = super().request(method, url, headers, post_data)
        self.answers.append(answer)
        if len(self.answers) == 1:
            raise stripe.APIConnectionError("simulated read timeout after the request was sent", should_retry=True)
        return answer


def test_lost_answer_is_retried_into_the_same_session(retrying_app, shop):
    app = retrying_app
    recorder = AnswerLostOnce(app.extensions["stripe_http_client"])
    app.extensions["stripe_http_client"] = recorder

    order = shop.start({"field-notebook": 1})

    assert idempotency_keys(recorder) == [f"checkout-session-{order.public_id}"] * 2
    _, _, replay_headers = recorder.answers[1]
    assert replay_headers.get("Idempotent-Replayed") == "true"
    assert emulator_session_ids(app) == [order.stripe_session_id]
    assert_pays_normally(app, shop, order)


def test_database_failure_mid_webhook_is_retried_by_stripe_and_applied_once(app, shop, monkeypatch):
    """The failure comes after the order was updated: the whole transaction must roll back."""
    order = shop.start({"canvas-tote": 1})
    real_apply = orders.apply_session_event

    def apply_then_lose_the_database(*args: Any, **kwargs: Any) -> orders.Outcome:
        real_apply(*args, **kwargs)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    patch_order_handler(monkeypatch, "apply_session_event", apply_then_lose_the_database)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    pay(shop, order.checkout_url)
    stripe_emulator.tick(app)

    assert get_order(app, order.public_id).status == "awaiting_payment"
    with app.app_context():
        [failed] = db.session.scalars(select(StripeEvent)).all()
        assert (failed.state, failed.outcome, failed.failures) == ("failed", None, 1)
        assert "server closed the connection" in failed.error
        [delivery] = db.session.scalars(select(Delivery)).all()
        assert (delivery.status, delivery.last_status) == ("pending", 500)

    patch_order_handler(monkeypatch, "apply_session_event", real_apply)
    assert stripe_emulator.tick(app, now=time.time() + 5) == 1  # Stripe's retry, after its backoff

    assert get_order(app, order.public_id).status == "paid"
    with app.app_context():
        assert db.session.scalars(select(StripeEvent.outcome)).all() == ["order paid"]
        assert db.session.scalar(select(Delivery.status)) == "delivered"


def backdate_orders(app: Flask, minutes: int) -> None:
    """Move every order's creation back in time (in Python: SQLite stores datetimes as text)."""
    with app.app_context():
        for order in db.session.scalars(select(Order)):
            order.created_at -= timedelta(minutes=minutes)
        db.session.commit()


def process_dies(*args: Any, **kwargs: Any):
    raise SystemExit("worker killed")


def test_crash_before_the_session_exists_leaves_a_pending_order_the_sweep_expires(app, shop, monkeypatch):
    monkeypatch.setattr(stripe_gateway, "create_checkout_session", process_dies)
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 1})
    order = latest_order(app)
    assert (order.status, order.stripe_session_id) == ("pending", None)
    assert emulator_session_ids(app) == []

    assert "0 stale pending order(s) expired" in run_sync(app).output  # a checkout may still be starting
    assert get_order(app, order.public_id).status == "pending"

    backdate_orders(app, app.config["STALE_PENDING_MINUTES"] + 1)
    assert "1 stale pending order(s) expired" in run_sync(app).output
    assert get_order(app, order.public_id).status == "expired"


def test_crash_after_the_session_exists_is_recovered_by_resubmitting_the_form(app, shop, monkeypatch):
    """The session was created but not saved: the same form gets the same session back."""
    real_create = stripe_gateway.create_checkout_session

    def create_then_die(*args: Any, **kwargs: Any):
        real_create(*args, **kwargs)
        raise SystemExit("worker killed")

    monkeypatch.setattr(stripe_gateway, "create_checkout_session", create_then_die)
    fields = shop.form_fields()
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 1}, fields=fields)
    [orphan] = emulator_session_ids(app)
    assert latest_order(app).status == "pending"

    monkeypatch.setattr(stripe_gateway, "create_checkout_session", real_create)
    assert shop.checkout({"enamel-mug": 1}, fields=fields).status_code == 303

    order = latest_order(app)
    assert order.stripe_session_id == orphan
    assert emulator_session_ids(app) == [orphan]
    assert count(app, Order) == 1
    assert_pays_normally(app, shop, order)



class TwinSubmittedWhileAnswerIsLost(RecordingHTTPClient):
    """Request A reaches Stripe and is carried out; while its answer is lost, the shopper's
    twin submission B (the same form) runs to the end; then A's answer never comes."""

    def __init__(self, inner: stripe.HTTPClient, twin) -> None:
        super().__init__(inner)
        self.twin = twin
        self.twin_started = False
        self.twin_response = None

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        answer = super().request(method, url, headers, post_data)
        if not self.twin_started and url.endswith("/v1/checkout/sessions"):
            self.twin_started = True
            twin = threading.Thread(target=lambda: setattr(self, "twin_response", self.twin()))  # its own request
            twin.start()
            twin.join(timeout=30)
            raise stripe.APIConnectionError("simulated read timeout after the request was sent", should_retry=False)
        return answer


def test_a_lost_session_answer_does_not_fail_the_order_its_twin_is_paying(app, shop):
    """Case 5: A marks the order failed only while it is still pending."""
    fields = shop.form_fields()
    twin = TwinSubmittedWhileAnswerIsLost(
        app.extensions["stripe_http_client"], lambda: shop.checkout({"enamel-mug": 1}, fields=fields)
    )
    app.extensions["stripe_http_client"] = twin
    with app.app_context():
        stock_before = db.session.scalar(select(Product.stock).where(Product.slug == "enamel-mug"))

    first = shop.checkout({"enamel-mug": 1}, fields=fields)

    assert first.status_code == 503  # A: Stripe's answer never came
    order = latest_order(app)
    assert twin.twin_response.status_code == 303 and twin.twin_response.headers["Location"] == order.checkout_url
    assert order.status == "awaiting_payment"
    with app.app_context():
        assert db.session.scalar(select(Product.stock).where(Product.slug == "enamel-mug")) == stock_before - 1
    assert emulator_session_ids(app) == [order.stripe_session_id]
    assert_pays_normally(app, shop, order)
    assert get_order(app, order.public_id).review_reason is None


def test_a_resubmission_minutes_later_gets_a_valid_session(app, shop, monkeypatch):
    """Case 7: the first attempt died before reaching Stripe; the form is sent again 10 minutes later."""
    monkeypatch.setattr(stripe_gateway, "create_checkout_session", process_dies)
    fields = shop.form_fields()
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 1}, fields=fields)
    monkeypatch.undo()
    backdate_orders(app, 10)

    again = shop.checkout({"enamel-mug": 1}, fields=fields)

    assert again.status_code == 303, again.get_data(as_text=True)
    order = latest_order(app)
    with app.app_context():
        expires_at = db.session.scalar(select(CheckoutSession.expires_at).where(CheckoutSession.id == order.stripe_session_id))
    assert expires_at == int((order.created_at + timedelta(minutes=45)).timestamp())
    assert_pays_normally(app, shop, order)


def test_after_the_window_a_session_made_earlier_is_still_returned(app, shop, monkeypatch):
    """The session was created but the process died; the form comes back 40 minutes later."""
    real_create = stripe_gateway.create_checkout_session

    def create_then_die(*args: Any, **kwargs: Any):
        real_create(*args, **kwargs)
        raise SystemExit("worker killed")

    recorder = record_stripe_calls(app)
    monkeypatch.setattr(stripe_gateway, "create_checkout_session", create_then_die)
    fields = shop.form_fields()
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 1}, fields=fields)
    [orphan] = emulator_session_ids(app)
    monkeypatch.setattr(stripe_gateway, "create_checkout_session", real_create)
    real_time = time.time
    monkeypatch.setattr(emulator_api, "time", SimpleNamespace(time=lambda: real_time() + 40 * 60))  # Stripe's clock

    assert shop.checkout({"enamel-mug": 1}, fields=fields).status_code == 303

    first, again = recorder.posts_to("/v1/checkout/sessions")
    assert (first[2]["Idempotency-Key"], first[3]) == (again[2]["Idempotency-Key"], again[3])  # same key, same body
    assert latest_order(app).stripe_session_id == orphan
    assert emulator_session_ids(app) == [orphan]


def test_after_the_window_without_a_session_the_checkout_is_closed_and_says_so(app, shop, monkeypatch):
    monkeypatch.setattr(stripe_gateway, "create_checkout_session", process_dies)
    fields = shop.form_fields()
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 1}, fields=fields)
    monkeypatch.undo()
    backdate_orders(app, app.config["STALE_PENDING_MINUTES"] + 1)  # the sweep has not run yet
    with app.app_context():
        stock_before = db.session.scalar(select(Product.stock).where(Product.slug == "enamel-mug"))

    late = shop.checkout({"enamel-mug": 1}, fields=fields)

    assert late.status_code == 409
    assert "took too long to start. Nothing was charged" in late.get_data(as_text=True)
    assert latest_order(app).status == "failed"
    assert emulator_session_ids(app) == []
    with app.app_context():
        assert db.session.scalar(select(Product.stock).where(Product.slug == "enamel-mug")) == stock_before + 1
