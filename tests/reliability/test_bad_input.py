"""Bad input, in one table: every row gets a 4xx with a clear message and changes nothing.

Rows cover the webhook, the checkout form and the order status endpoint. For each: the
expected status, a fragment of the message, the database snapshot unchanged, and no call
to Stripe at all.
"""
from __future__ import annotations

import html
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from shop.models import Order
from tests.helpers import (
    ShopClient,
    latest_order,
    record_stripe_calls,
    session_event,
    sign,
    snapshot,
    webhook_secret,
)


@dataclass
class World:
    """A shop with one placed order (by `owner`, whose form token is used) and a stranger."""

    app: Flask
    owner: ShopClient
    owner_fields: dict[str, str]
    order: Order
    stranger: ShopClient

    def event(self, **changes: Any) -> dict[str, Any]:
        return {**session_event(self.order, "checkout.session.completed"), **changes}

    def event_without(self, *path: str) -> str:
        event = self.event()
        target = event
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return json.dumps(event)

    def webhook(self, body: str, content_type: str = "application/json", secret: str | None = None,
                timestamp: int | None = None) -> TestResponse:
        signature = sign(body, secret or webhook_secret(self.app), timestamp=timestamp)
        return self.app.test_client().post(
            "/webhooks/stripe", data=body, headers={"Content-Type": content_type, "Stripe-Signature": signature}
        )

    def checkout(self, quantities: dict[str, Any], **extra: Any) -> TestResponse:
        """A fresh form from a new page load of the stranger's browser, with changes."""
        return self.stranger.checkout(quantities, **extra)

    def checkout_with(self, replace: dict[str, str | None], quantities: dict[str, Any]) -> TestResponse:
        fields = {**self.stranger.form_fields(), **replace}
        return self.stranger.checkout(quantities, fields={k: v for k, v in fields.items() if v is not None})


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[World], TestResponse]
    status: int
    message: str


def _big(world: World) -> str:
    return json.dumps(world.event(padding="x" * (world.app.config["MAX_CONTENT_LENGTH"] + 1)))


CASES = [
    # --- webhook --------------------------------------------------------------------------
    Case("webhook: malformed JSON", lambda w: w.webhook("{not json"), 400, "not valid JSON"),
    Case("webhook: body over MAX_CONTENT_LENGTH", lambda w: w.webhook(_big(w)), 413, "exceeds the capacity limit"),
    Case("webhook: text/plain content type", lambda w: w.webhook(json.dumps(w.event()), "text/plain"), 415,
         "Expected application/json"),
    Case("webhook: event without id", lambda w: w.webhook(w.event_without("id")), 400, "event.id is missing"),
    Case("webhook: event without type", lambda w: w.webhook(w.event_without("type")), 400, "event.type is missing"),
    Case("webhook: session without amount", lambda w: w.webhook(w.event_without("data", "object", "amount_total")),
         400, "checkout.session.amount_total is missing"),
    Case("webhook: session without currency", lambda w: w.webhook(w.event_without("data", "object", "currency")),
         400, "checkout.session.currency is missing"),
    Case("webhook: checkout event carrying a payment intent",
         lambda w: w.webhook(json.dumps(w.event(data={"object": {"id": "pi_1", "object": "payment_intent"}}))),
         400, "must carry a checkout.session"),
    Case("webhook: signed with another secret",
         lambda w: w.webhook(json.dumps(w.event()), secret="whsec_" + secrets.token_hex(16)), 400,
         "Invalid or expired Stripe-Signature"),
    Case("webhook: replay older than the tolerance",
         lambda w: w.webhook(json.dumps(w.event()), timestamp=int(time.time()) - 301), 400,
         "Invalid or expired Stripe-Signature"),
    # --- checkout form --------------------------------------------------------------------
    Case("checkout: negative quantity", lambda w: w.checkout({"enamel-mug": "-1"}), 400, "whole number from 0 to 10"),
    Case("checkout: float quantity", lambda w: w.checkout({"enamel-mug": "1.5"}), 400, "whole number from 0 to 10"),
    Case("checkout: huge quantity", lambda w: w.checkout({"enamel-mug": "9" * 40}), 400, "whole number from 0 to 10"),
    Case("checkout: no quantities", lambda w: w.checkout({}), 400, "Choose at least one item"),
    Case("checkout: missing checkout token", lambda w: w.checkout_with({"checkout_token": None}, {"enamel-mug": 1}),
         400, "checkout form is incomplete"),
    Case("checkout: unknown product", lambda w: w.checkout({"gold-bar": 1}), 400, "something we don't sell"),
    Case("checkout: tampered price", lambda w: w.checkout({"enamel-mug": 1}, **{"price-enamel-mug": "1"}), 400,
         "Prices and products come from the shop only"),
    Case("checkout: missing CSRF token", lambda w: w.checkout_with({"csrf_token": None}, {"enamel-mug": 1}), 400,
         "Reload the page"),
    Case("checkout: wrong CSRF token", lambda w: w.checkout_with({"csrf_token": "forged"}, {"enamel-mug": 1}), 400,
         "Reload the page"),
    Case("checkout: body over MAX_CONTENT_LENGTH",
         lambda w: w.checkout({"enamel-mug": 1}, note="x" * (w.app.config["MAX_CONTENT_LENGTH"] + 1)), 413,
         "too large"),
    Case("checkout: checkout token reused from another browser",
         lambda w: w.checkout_with({"checkout_token": w.owner_fields["checkout_token"]}, {"enamel-mug": 1}), 409,
         "already used"),
    # --- order status ---------------------------------------------------------------------
    Case("status: unknown order", lambda w: w.stranger.http.get(f"/orders/ord_{'A' * 22}/status"), 404, "not found"),
    Case("status: malformed order id", lambda w: w.stranger.http.get("/orders/1%20OR%201=1/status"), 404, "not found"),
    Case("status: another browser's order", lambda w: w.stranger.http.get(f"/orders/{w.order.public_id}/status"),
         404, "not found"),
    Case("status: another browser's order, wrong session id",
         lambda w: w.stranger.http.get(f"/orders/{w.order.public_id}/status?session_id=cs_test_guess"), 404,
         "not found"),
]


@pytest.fixture
def world(app: Flask) -> World:
    owner = ShopClient(app)
    owner_fields = owner.form_fields()
    assert owner.checkout({"enamel-mug": 1}, fields=owner_fields).status_code == 303
    return World(app, owner, owner_fields, latest_order(app), ShopClient(app))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_4xx_with_a_message_and_changes_nothing(world, case):
    before = snapshot(world.app)
    stripe_calls = record_stripe_calls(world.app)

    response = case.send(world)

    body = html.unescape(response.get_data(as_text=True))
    assert response.status_code == case.status, body
    assert case.message in body
    assert snapshot(world.app) == before
    assert stripe_calls.requests == []
