"""The emulated API through the official SDK: sessions, validation, auth, idempotency, events, refunds."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import stripe

from shop import stripe_emulator
from shop.extensions import db
from shop.stripe_emulator.models import CheckoutSession, IdempotencyKey

from .conftest import pay, sdk_client, session_params


def test_create_retrieve_and_line_items(stripe_client, emulator_app):
    session = stripe_client.v1.checkout.sessions.create(params=session_params())
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert session.amount_total == session.amount_subtotal == 3000
    assert session.currency == "usd"
    assert session.payment_intent is None and session.customer_details is None
    assert session.metadata.to_dict() == {"order_id": "order-42"}
    assert session.client_reference_id == "order-42"
    assert session.url == f"http://127.0.0.1:5000/_stripe/pay/{session.id}"
    assert session.livemode is False

    again = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert again.to_dict() == session.to_dict()

    items = stripe_client.v1.checkout.sessions.line_items.list(session.id)
    assert items.object == "list" and items.has_more is False
    assert items.url == f"/v1/checkout/sessions/{session.id}/line_items"
    first = items.data[0]
    assert first.id.startswith("li_") and first.object == "item"
    assert (first.description, first.quantity, first.amount_total) == ("Mug", 2, 2500)
    assert first.price.unit_amount == 1250 and first.price.object == "price"

    page = stripe_client.v1.checkout.sessions.line_items.list(session.id, params={"limit": 1})
    assert len(page.data) == 1 and page.has_more is True
    rest = stripe_client.v1.checkout.sessions.line_items.list(session.id, params={"starting_after": first.id})
    assert [item.description for item in rest.data] == ["Sticker"]

    expanded = stripe_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert len(expanded.line_items.data) == 2

    back = stripe_client.v1.checkout.sessions.line_items.list(
        session.id, params={"ending_before": rest.data[0].id, "limit": 1}
    )
    assert [item.id for item in back.data] == [first.id] and back.has_more is False


def test_expire(stripe_client):
    session = stripe_client.v1.checkout.sessions.create(params=session_params())
    expired = stripe_client.v1.checkout.sessions.expire(session.id, params={"expand": ["line_items"]})
    assert (expired.status, expired.url) == ("expired", None)
    assert len(expired.line_items.data) == 2
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.checkout.sessions.expire(session.id)
    assert "Only Checkout Sessions with a status in [open] can be expired" in excinfo.value.user_message
    event = stripe_client.v1.events.list(params={"type": "checkout.session.expired"}).data[0]
    assert event.data.object.id == session.id
    assert event.request.id and event.request.id.startswith("req_")


def test_unknown_session_is_404(stripe_client):
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert excinfo.value.http_status == 404
    assert excinfo.value.code == "resource_missing"
    assert excinfo.value.param == "session"


@pytest.mark.parametrize(
    ("overrides", "param", "message"),
    [
        ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 100, "product_data": {"name": "A"}},
                          "quantity": 0}]}, "line_items[0][quantity]", "greater than or equal to 1"),
        ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 100, "product_data": {"name": "A"}},
                          "quantity": 1000}]}, "line_items[0][quantity]", "less than or equal to 999"),
        ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": -1, "product_data": {"name": "A"}},
                          "quantity": 1}]}, "line_items[0][price_data][unit_amount]", "greater than or equal to 0"),
        ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 1, "product_data": {"description": "x"}}, "quantity": 1}]},
         "line_items[0][price_data][product_data][name]", "Missing required param"),
        ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 1, "product_data": {"name": "A"}},
                          "quantity": 1},
                         {"price_data": {"currency": "eur", "unit_amount": 1, "product_data": {"name": "B"}},
                          "quantity": 1}]}, "line_items[1][price_data][currency]", "same currency"),
        ({"success_url": None}, "success_url", "Missing required param: success_url."),
        ({"success_url": "not a url"}, "success_url", "Not a valid URL"),
        ({"expires_at": int(time.time()) + 60}, "expires_at", "at least 30 minutes"),
        ({"expires_at": int(time.time()) + 25 * 3600}, "expires_at", "less than 24 hours"),
        ({"frobnicate": "yes"}, "frobnicate", "Received unknown parameter: frobnicate"),
        ({"client_reference_id": ""}, "client_reference_id", "empty string"),
        ({"mode": "subscription"}, "mode", "mode=payment"),
        ({"payment_method_types": ["carrier_pigeon"]}, "payment_method_types[0]", "must be one of"),
    ],
)
def test_validation_errors_name_the_param(stripe_client, overrides, param, message):
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.checkout.sessions.create(params=session_params(**overrides))
    assert excinfo.value.http_status == 400
    assert excinfo.value.param == param
    assert message in excinfo.value.user_message
    assert excinfo.value.json_body["error"]["type"] == "invalid_request_error"


def test_unknown_nested_param(browser):
    response = browser.post(
        "/_stripe/v1/checkout/sessions",
        data={"mode": "payment", "success_url": "https://x.test/", "line_items[0][quantity]": "1",
              "line_items[0][price_data][colour]": "red"},
        headers={"Authorization": "Bearer sk_test_x"},
    )
    assert response.status_code == 400
    assert response.json["error"]["param"] == "line_items[0][price_data][colour]"
    assert response.headers["Request-Id"].startswith("req_")
    assert response.headers["Stripe-Version"] == stripe.api_version


def test_non_test_key_is_rejected(emulator_app, browser):
    with pytest.raises(stripe.AuthenticationError) as excinfo:
        sdk_client(emulator_app, "sk_live_abcdefgh1234").v1.checkout.sessions.create(params=session_params())
    assert excinfo.value.http_status == 401
    assert "Invalid API Key provided: sk_live_********1234" in excinfo.value.user_message
    assert browser.get("/_stripe/v1/events").status_code == 401
    short = browser.get("/_stripe/v1/events", headers={"Authorization": "Bearer sk_live_x"})
    assert short.json["error"]["message"] == "Invalid API Key provided: sk_live_*"


def test_unrecognized_url(browser):
    response = browser.get("/_stripe/v1/customers", headers={"Authorization": "Bearer sk_test_x"})
    assert response.status_code == 404
    assert response.json["error"]["type"] == "invalid_request_error"


def test_idempotent_replay_and_mismatch(emulator_app, stripe_client):
    options = {"idempotency_key": "order-7"}
    params = session_params()
    first = stripe_client.v1.checkout.sessions.create(params=params, options=options)
    again = stripe_client.v1.checkout.sessions.create(params=params, options=options)
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"

    with pytest.raises(stripe.IdempotencyError) as excinfo:
        stripe_client.v1.checkout.sessions.create(params={**params, "client_reference_id": "other"}, options=options)
    assert excinfo.value.json_body["error"]["type"] == "idempotency_error"

    # The key belongs to the API key that used it.
    other = sdk_client(emulator_app, "sk_test_other").v1.checkout.sessions.create(params=params, options=options)
    assert other.id != first.id


def test_idempotency_key_not_kept_after_validation_error(stripe_client):
    options = {"idempotency_key": "fix-and-retry"}
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.checkout.sessions.create(params=session_params(success_url="nope"), options=options)
    assert stripe_client.v1.checkout.sessions.create(params=session_params(), options=options).status == "open"


def test_idempotency_key_in_progress_conflicts(emulator_app, browser):
    """A second request while the first holds the key gets 409 and creates nothing."""
    body = {"mode": "payment", "success_url": "https://x.test/", "line_items[0][quantity]": "1",
            "line_items[0][price_data][currency]": "usd", "line_items[0][price_data][unit_amount]": "100",
            "line_items[0][price_data][product_data][name]": "A"}
    fingerprint = hashlib.sha256(
        json.dumps(["/_stripe/v1/checkout/sessions", sorted(body.items())]).encode()
    ).hexdigest()
    with emulator_app.app_context():
        db.session.add(IdempotencyKey(id=hashlib.sha256(b"sk_test_x\0busy").hexdigest(),
                                      fingerprint=fingerprint, created=int(time.time()), request_id="req_1"))
        db.session.commit()
    response = browser.post("/_stripe/v1/checkout/sessions", data=body,
                            headers={"Authorization": "Bearer sk_test_x", "Idempotency-Key": "busy"})
    assert response.status_code == 409
    assert response.json["error"]["type"] == "idempotency_error"
    with emulator_app.app_context():
        assert db.session.query(CheckoutSession).count() == 0


def test_events_list_filters_and_pagination(emulator_app, stripe_client):
    ids = []
    for _ in range(5):
        ids.append(stripe_client.v1.checkout.sessions.create(params=session_params()).id)
    for session_id in ids:
        stripe_client.v1.checkout.sessions.expire(session_id)
    events = stripe_client.v1.events.list()
    assert [event.data.object.id for event in events.data] == ids[::-1]  # newest first
    assert events.has_more is False

    page1 = stripe_client.v1.events.list(params={"limit": 2})
    assert page1.has_more is True
    page2 = stripe_client.v1.events.list(params={"limit": 2, "starting_after": page1.data[-1].id})
    assert [e.data.object.id for e in page1.data + page2.data] == ids[::-1][:4]
    assert page2.has_more is True
    page3 = stripe_client.v1.events.list(params={"limit": 2, "starting_after": page2.data[-1].id})
    assert [e.data.object.id for e in page3.data] == [ids[0]] and page3.has_more is False
    back = stripe_client.v1.events.list(params={"limit": 2, "ending_before": page2.data[0].id})
    assert [e.id for e in back.data] == [e.id for e in page1.data]
    assert back.has_more is False
    newer = stripe_client.v1.events.list(params={"limit": 1, "ending_before": page3.data[0].id})
    assert [e.id for e in newer.data] == [page2.data[-1].id] and newer.has_more is True
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.events.list(
            params={"starting_after": page1.data[-1].id, "ending_before": page2.data[-1].id}
        )
    assert "Please pass in only one" in excinfo.value.user_message
    assert len(list(stripe_client.v1.events.list(params={"limit": 2}).auto_paging_iter())) == 5

    assert stripe_client.v1.events.list(params={"type": "checkout.session.completed"}).data == []
    assert len(stripe_client.v1.events.list(params={"type": "checkout.session.*"}).data) == 5
    # `*` is the only wildcard: SQL LIKE's `_` and `%` must match only themselves.
    assert stripe_client.v1.events.list(params={"type": "checkout_session.*"}).data == []
    assert stripe_client.v1.events.list(params={"type": "checkout%.*"}).data == []
    created = events.data[0].created
    assert len(stripe_client.v1.events.list(params={"created": {"gt": created}}).data) == 0
    assert len(stripe_client.v1.events.list(params={"created": {"lte": created}}).data) == 5
    assert len(stripe_client.v1.events.list(params={"created": {"gte": created + 1}}).data) == 0
    assert len(stripe_client.v1.events.list(params={"created": {"lt": created + 1}}).data) == 5

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.events.retrieve(events.data[0].id, params={"expand": ["data.object"]})
    assert excinfo.value.param == "expand"
    one = stripe_client.v1.events.retrieve(events.data[0].id)
    assert one.type == "checkout.session.expired"
    assert one.api_version == stripe.api_version
    assert one.pending_webhooks == 1
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.events.list(params={"limit": 101})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.events.retrieve("evt_missing")


def test_refunds(emulator_app, stripe_client, browser, webhooks):
    session = stripe_client.v1.checkout.sessions.create(params=session_params())
    pay(browser, session)
    paid = stripe_client.v1.checkout.sessions.retrieve(session.id)

    refund = stripe_client.v1.refunds.create(params={"payment_intent": paid.payment_intent, "amount": 1000})
    assert refund.id.startswith("re_") and refund.object == "refund"
    assert (refund.amount, refund.status, refund.payment_intent) == (1000, "succeeded", paid.payment_intent)

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.refunds.create(params={"payment_intent": paid.payment_intent, "amount": 2001})
    assert excinfo.value.param == "amount"
    assert "greater than unrefunded amount" in excinfo.value.user_message

    rest = stripe_client.v1.refunds.create(params={"payment_intent": paid.payment_intent})
    assert rest.amount == 2000
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.refunds.create(params={"payment_intent": paid.payment_intent})
    assert excinfo.value.code == "charge_already_refunded"

    events = stripe_client.v1.events.list(params={"type": "charge.refunded"}).data
    charges = [event.data.object for event in events]
    assert [(c.amount_refunded, c.refunded) for c in charges] == [(3000, True), (1000, False)]
    assert charges[0].object == "charge" and charges[0].id.startswith("ch_")
    assert charges[0].payment_intent == paid.payment_intent
    assert stripe_client.v1.refunds.retrieve(refund.id).amount == 1000

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.refunds.create(params={"payment_intent": "pi_unknown"})
    assert excinfo.value.http_status == 404


def test_unpaid_session_cannot_be_refunded(stripe_client, browser, emulator_app, webhooks):
    session = stripe_client.v1.checkout.sessions.create(params=session_params())
    pay(browser, session, method="bank_transfer")
    pending = stripe_client.v1.checkout.sessions.retrieve(session.id)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.refunds.create(params={"payment_intent": pending.payment_intent})
    assert "does not have a successful charge" in excinfo.value.user_message
    stripe_emulator.tick(emulator_app, now=time.time() + 60)
    assert stripe_client.v1.refunds.create(params={"payment_intent": pending.payment_intent}).amount == 3000


def test_sessions_list_by_payment_intent_and_pagination(emulator_app, stripe_client, browser):
    sessions = stripe_client.v1.checkout.sessions
    ids = [sessions.create(params=session_params()).id for _ in range(4)]
    pay(browser, sessions.retrieve(ids[1]))
    payment_intent = sessions.retrieve(ids[1]).payment_intent

    paid = sessions.list(params={"payment_intent": payment_intent})
    assert [session.id for session in paid.data] == [ids[1]] and paid.has_more is False
    assert paid.data[0].payment_status == "paid"
    assert sessions.list(params={"payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa"}).data == []

    everything = [session.id for session in sessions.list(params={"limit": 100}).data]
    assert sorted(everything) == sorted(ids)
    page1 = sessions.list(params={"limit": 3})
    page2 = sessions.list(params={"limit": 3, "starting_after": page1.data[-1].id})
    assert (page1.has_more, page2.has_more) == (True, False)
    assert [session.id for session in page1.data + page2.data] == everything
    before = sessions.list(params={"limit": 2, "ending_before": page2.data[0].id})
    assert [session.id for session in before.data] == everything[1:3] and before.has_more is True
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sessions.list(params={"starting_after": "cs_test_missing"})
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as too_many:
        sessions.list(params={"limit": 101})
    assert too_many.value.param == "limit"


def test_another_integrations_payment_is_listed_with_its_own_session(database_url, monkeypatch):
    """A payment made through another integration's Checkout Session: Stripe names that session."""
    from shop.stripe_emulator import foreign

    from .conftest import make_emulator_app

    monkeypatch.setattr(foreign, "traffic", foreign.other_payment)
    app = make_emulator_app(database_url, STRIPE_EMULATOR_FOREIGN_TRAFFIC=1)
    client = sdk_client(app)
    client.v1.checkout.sessions.expire(client.v1.checkout.sessions.create(params=session_params()).id)
    events = client.v1.events.list(params={"type": "checkout.session.completed"}).data
    [theirs] = [event.data.object for event in events]

    [listed] = client.v1.checkout.sessions.list(params={"payment_intent": theirs.payment_intent}).data

    assert listed.to_dict() == theirs.to_dict()
    assert listed.client_reference_id.startswith("inv-") and listed.payment_status == "paid"
