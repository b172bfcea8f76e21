"""Refunds made right after paying, delivered before the payment's own events, through the
emulator's signed webhooks: Stripe promises no order of delivery."""
from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from shop import stripe_emulator
from shop.extensions import db
from shop.stripe_emulator.models import CheckoutSession
from tests.conftest import seeded_app
from tests.helpers import ShopClient, get_order, pay, stripe_sdk
from tests.reliability.conftest import run_sync


def payment_intent_of(app: Flask, session_id: str) -> str:
    with app.app_context():
        return db.session.scalar(select(CheckoutSession.payment_intent).where(CheckoutSession.id == session_id))


def refund_in_dashboard(app: Flask, session_id: str, amount: int | None = None) -> None:
    params = {"payment_intent": payment_intent_of(app, session_id)} | ({"amount": amount} if amount else {})
    with app.app_context():
        stripe_sdk(app).v1.refunds.create(params=params)


class DeliveryLog:
    """Wraps the emulator's transport: records each delivered event type, refuses chosen ones once."""

    def __init__(self, app: Flask, refuse_once: str | None = None) -> None:
        self.emulator = app.extensions["stripe_emulator"]
        self.inner = self.emulator.transport
        self.refuse_once = refuse_once
        self.refused: set[str] = set()
        self.delivered: list[tuple[str, str]] = []  # (event type, payment intent or session id)
        self.emulator.transport = self

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        event = json.loads(body)
        if event["type"] == self.refuse_once and event["id"] not in self.refused:
            self.refused.add(event["id"])
            return 503
        status = self.inner(url, body, headers)
        self.delivered.append((event["type"], event["data"]["object"].get("payment_intent")))
        return status


def test_refund_delivered_while_the_payment_is_in_stripes_retry_queue(app):
    shopper = ShopClient(app)
    order = shopper.start({"enamel-mug": 2})
    deliveries = DeliveryLog(app, refuse_once="checkout.session.completed")
    pay(shopper, order.checkout_url)
    refund_in_dashboard(app, order.stripe_session_id)

    stripe_emulator.tick(app)  # the completion is refused (503); the refund goes through

    assert [kind for kind, _ in deliveries.delivered] == ["refund.created", "charge.refunded"]
    assert get_order(app, order.public_id).status == "awaiting_payment"
    stripe_emulator.tick(app, now=time.time() + 60)  # Stripe retries the completion

    refunded = get_order(app, order.public_id)
    assert (refunded.status, refunded.amount_refunded, refunded.review_reason) == ("refunded", 4800, None)
    summary = run_sync(app).output
    assert "0 applied" in summary and "0 waiting" in summary  # nothing left for recovery


@pytest.fixture
def shuffled_app(database_url: str) -> Iterator[Flask]:
    with seeded_app(database_url, STRIPE_EMULATOR_SHUFFLE=True, STRIPE_EMULATOR_DUPLICATE=True) as app:
        yield app


def test_shuffled_and_duplicated_deliveries_of_payments_and_refunds_lose_no_refund(shuffled_app):
    app = shuffled_app
    random.seed(10)  # the emulator shuffles with `random`: this order puts refunds first, checked below
    shoppers = [ShopClient(app) for _ in range(6)]
    placed = [shopper.start({"canvas-tote": 1}) for shopper in shoppers]  # 3200 usd each
    for index, (shopper, order) in enumerate(zip(shoppers, placed, strict=True)):
        pay(shopper, order.checkout_url)
        refund_in_dashboard(app, order.stripe_session_id, amount=None if index % 2 else 1000)
    deliveries = DeliveryLog(app)

    stripe_emulator.tick(app)

    refund_first = [
        pi for kind, pi in deliveries.delivered
        if kind == "charge.refunded" and ("checkout.session.completed", pi) not in deliveries.delivered[: deliveries.delivered.index((kind, pi))]
    ]
    assert len(refund_first) >= 2, deliveries.delivered
    final = [get_order(app, order.public_id) for order in placed]
    assert [(o.status, o.amount_refunded) for o in final] == [("partially_refunded", 1000), ("refunded", 3200)] * 3
    assert all(o.review_reason is None for o in final)
