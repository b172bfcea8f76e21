"""Fixtures for the Stripe emulator: the app on each database backend, an SDK client, and
a recording webhook transport (so these tests don't depend on the shop's webhook handler)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shop import create_app
from shop.extensions import db
from tests.helpers import SHIPPING_ADDRESS

CARD = {"email": "ada@example.com", "method": "card", "card": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123", **SHIPPING_ADDRESS}


@dataclass
class Recorder:
    """A webhook transport that records each POST and answers with queued statuses (default 200)."""

    statuses: list[int | Exception] = field(default_factory=list)
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.calls.append((url, body, headers))
        outcome = self.statuses.pop(0) if self.statuses else 200
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @property
    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body, _ in self.calls]


def make_emulator_app(database_url: str, **overrides: Any) -> Flask:
    return create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url, **overrides})


@pytest.fixture
def emulator_app(database_url: str) -> Iterator[Flask]:
    app = make_emulator_app(database_url)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def webhooks(emulator_app: Flask) -> Recorder:
    recorder = Recorder()
    emulator_app.extensions["stripe_emulator"].transport = recorder
    return recorder


@pytest.fixture
def stripe_client(emulator_app: Flask) -> stripe.StripeClient:
    return sdk_client(emulator_app)


def sdk_client(app: Flask, key: str = "sk_test_x") -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": app.config["STRIPE_API_BASE"]},
        http_client=app.extensions["stripe_http_client"],
    )


@pytest.fixture
def browser(emulator_app: Flask) -> FlaskClient:
    return emulator_app.test_client()


def session_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {"price_data": {"currency": "usd", "unit_amount": 1250,
                            "product_data": {"name": "Mug", "description": "Blue, 350 ml"}}, "quantity": 2},
            {"price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Sticker"}}, "quantity": 1},
        ],
        "success_url": "https://shop.test/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.test/checkout/cancel",
        "client_reference_id": "order-42",
        "metadata": {"order_id": "order-42"},
        "expires_at": int(time.time()) + 3600,
    }
    params.update(overrides)
    return params


def page_path(url: str) -> str:
    return urlsplit(url).path


def pay(browser: FlaskClient, session: Any, **form: str) -> TestResponse:
    return browser.post(page_path(session.url), data={**CARD, **form})
