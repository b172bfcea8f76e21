"""`flask stripe check`: will Stripe send this shop every event it handles? Against the emulator's
webhook endpoints, set up as a real account's could be."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import stripe
from click.testing import Result
from flask import Flask

from shop import stripe_emulator
from shop.events import HANDLED_EVENT_TYPES
from shop.stripe_emulator.endpoints import OWN_ENDPOINT_ID
from tests.helpers import ShopClient, get_order, pay, stripe_sdk

README = Path(__file__).resolve().parents[1] / "README.md"
SHOP_WEBHOOK = "http://127.0.0.1:5000/webhooks/stripe"  # the emulator's address outside a request


def stripe_check(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["stripe", "check", *args])


def test_a_healthy_endpoint_passes_every_check(app):
    result = stripe_check(app)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Webhook endpoint expected at {SHOP_WEBHOOK}",
        "OK   key: test secret key (sk_test_…), ALLOW_LIVE_PAYMENTS is off: test payments",
        f"OK   endpoint {OWN_ENDPOINT_ID}: {SHOP_WEBHOOK} is enabled",
        f"OK   endpoint {OWN_ENDPOINT_ID}: subscribes to every event (*)",
        f"OK   endpoint {OWN_ENDPOINT_ID}: API version {stripe.api_version}",
    ]


def test_no_endpoint_for_the_shop_fails(app):
    stripe_sdk(app).v1.webhook_endpoints.delete(OWN_ENDPOINT_ID)
    stripe_sdk(app).v1.webhook_endpoints.create(
        params={"url": "https://another-shop.example/hooks", "enabled_events": ["*"], "api_version": stripe.api_version}
    )

    result = stripe_check(app)

    assert result.exit_code == 1
    assert (
        f"FAIL endpoint: no webhook endpoint points at {SHOP_WEBHOOK} "
        "(the account's: https://another-shop.example/hooks)"
    ) in result.output
    assert "would lose events" in result.output


def test_an_endpoint_elsewhere_than_the_shop_fails(app):
    result = stripe_check(app, "--url", "https://shop.example")
    assert result.exit_code == 1
    assert "FAIL endpoint: no webhook endpoint points at https://shop.example/webhooks/stripe" in result.output


def test_an_endpoint_missing_event_types_fails_and_names_them(app):
    subscribed = ["checkout.session.completed", "checkout.session.expired", "charge.refunded"]
    stripe_sdk(app).v1.webhook_endpoints.update(OWN_ENDPOINT_ID, params={"enabled_events": subscribed})

    result = stripe_check(app)

    assert result.exit_code == 1
    missing = [event_type for event_type in HANDLED_EVENT_TYPES if event_type not in subscribed]
    assert f"FAIL endpoint {OWN_ENDPOINT_ID}: does not subscribe to {', '.join(missing)}: Stripe never sends those" in result.output
    assert f"OK   endpoint {OWN_ENDPOINT_ID}: API version {stripe.api_version}" in result.output


def test_an_endpoint_listing_every_handled_type_passes(app):
    stripe_sdk(app).v1.webhook_endpoints.update(OWN_ENDPOINT_ID, params={"enabled_events": list(HANDLED_EVENT_TYPES)})
    result = stripe_check(app)
    assert result.exit_code == 0, result.output
    assert f"subscribes to all {len(HANDLED_EVENT_TYPES)} event types the shop handles" in result.output


@pytest.mark.parametrize("version", ["2024-06-20", None])
def test_an_endpoint_on_another_api_version_fails(app, version):
    sdk = stripe_sdk(app)
    sdk.v1.webhook_endpoints.delete(OWN_ENDPOINT_ID)
    params = {"url": SHOP_WEBHOOK, "enabled_events": ["*"]}
    endpoint = sdk.v1.webhook_endpoints.create(params=params | ({"api_version": version} if version else {}))

    result = stripe_check(app)

    assert result.exit_code == 1
    shown = version or "unset (the account default)"
    assert (
        f"FAIL endpoint {endpoint.id}: API version {shown}, the shop reads {stripe.api_version}: "
        "events would arrive shaped for another version"
    ) in result.output
    assert f"OK   endpoint {endpoint.id}: subscribes to every event (*)" in result.output


def test_a_disabled_endpoint_fails(app):
    stripe_sdk(app).v1.webhook_endpoints.update(OWN_ENDPOINT_ID, params={"disabled": True})
    result = stripe_check(app)
    assert result.exit_code == 1
    assert f"FAIL endpoint {OWN_ENDPOINT_ID}: {SHOP_WEBHOOK} is disabled" in result.output


def test_a_test_key_where_live_payments_are_allowed_fails(app):
    app.config["ALLOW_LIVE_PAYMENTS"] = True
    result = stripe_check(app)
    assert result.exit_code == 1
    assert "FAIL key: test secret key (sk_test_…) but ALLOW_LIVE_PAYMENTS=1: no payment would be real" in result.output


def test_without_the_shops_address_it_says_what_to_set(app):
    app.config["STRIPE_OFFLINE"] = False  # as with real keys
    result = stripe_check(app)
    assert result.exit_code == 2
    assert "set SHOP_URL or pass --url" in result.output


def test_the_emulator_sends_only_the_event_types_its_endpoint_subscribes_to(app):
    """What the check warns about is real: a type the endpoint lacks never arrives."""
    stripe_sdk(app).v1.webhook_endpoints.update(OWN_ENDPOINT_ID, params={"enabled_events": ["checkout.session.expired"]})
    shopper = ShopClient(app)
    order = shopper.start({"enamel-mug": 1})

    assert pay(shopper, order.checkout_url).status_code == 303
    stripe_emulator.tick(app)

    assert get_order(app, order.public_id).status == "awaiting_payment"  # its completion was never sent
    assert "checkout.session.completed" in [e.type for e in stripe_sdk(app).v1.events.list().data]  # yet it happened


def test_the_operator_view_shows_the_same_findings(app):
    app.config.update(ADMIN_USERNAME="operator", ADMIN_PASSWORD="a-long-password")
    stripe_sdk(app).v1.webhook_endpoints.update(OWN_ENDPOINT_ID, params={"enabled_events": ["checkout.session.completed"]})
    page = app.test_client().get("/admin/stripe", auth=("operator", "a-long-password")).get_data(as_text=True)

    assert "Events would be lost" in page
    assert "<code>http://localhost/webhooks/stripe</code>" in page  # the address the operator reached
    assert f"endpoint {OWN_ENDPOINT_ID}: does not subscribe to charge.dispute.closed" in page
    assert all(f"<li><code>{event_type}</code></li>" in page for event_type in HANDLED_EVENT_TYPES)


def test_the_readmes_deploy_step_subscribes_to_exactly_the_handled_event_types():
    readme = README.read_text(encoding="utf-8")
    step = readme[readme.index("4. **Stripe webhook.**"):readme.index("5. **Rotating the webhook secret.**")]
    listed = re.findall(r"enabled_events\[\]=([a-z_.]+)", step)
    assert listed == list(HANDLED_EVENT_TYPES)
    assert f"-d api_version={stripe.api_version} " in step
