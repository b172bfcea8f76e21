"""Contract tests: every object the emulator returns validates against Stripe's OpenAPI spec,
and every parameter it accepts exists in the spec's request schema.

The spec lives outside the repo, at ../shared/stripe (see its README.md).
"""
from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import stripe
import yaml
from openapi_schema_validator import OAS30Validator
from stripe.params.checkout import SessionListParams

from shop import stripe_emulator
from shop.stripe_emulator.params import (
    CREATE_REFUND_PARAMS,
    CREATE_SESSION_PARAMS,
    CREATE_WEBHOOK_ENDPOINT_PARAMS,
    LIST_EVENTS_PARAMS,
    LIST_SESSIONS_PARAMS,
    UPDATE_WEBHOOK_ENDPOINT_PARAMS,
    param_paths,
)
from tests.helpers import stripe_reference

from .conftest import pay, session_params

FORM = "application/x-www-form-urlencoded"


def _allow_nulls(node: Any) -> None:
    """Stripe marks fields `nullable` without listing null in enum/anyOf (see the spec's README)."""
    if isinstance(node, dict):
        if node.get("nullable") is True:
            if "enum" in node and None not in node["enum"]:
                node["enum"].append(None)
            for key in ("anyOf", "oneOf"):
                if key in node:
                    node[key].append({"enum": [None]})
        for value in node.values():
            _allow_nulls(value)
    elif isinstance(node, list):
        for value in node:
            _allow_nulls(value)


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    with stripe_reference("spec3.yaml").open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=yaml.CSafeLoader)
    _allow_nulls(loaded)
    return loaded


def assert_valid(spec: dict[str, Any], schema_name: str, instance: Any) -> None:
    schema = {**copy.deepcopy(spec["components"]["schemas"][schema_name]), "components": spec["components"]}
    errors = sorted(OAS30Validator(schema).iter_errors(instance), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{list(error.path)}: {error.message[:300]}" for error in errors)


def _dict(obj: Any) -> dict[str, Any]:
    """The JSON as served (the SDK's own objects turn decimal strings into Decimals)."""
    return json.loads(obj.last_response.body)


def _request_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return spec["paths"][path]["post"]["requestBody"]["content"][FORM]["schema"]


def _spec_has(schema: dict[str, Any], names: tuple[str, ...]) -> bool:
    node = schema
    for name in names:
        if node.get("type") == "array":
            node = node["items"]
        candidates = [node, *node.get("anyOf", [])]
        found = next((c["properties"][name] for c in candidates if name in c.get("properties", {})), None)
        if found is None:
            # A free-form map such as metadata: any key is a parameter the spec allows.
            found = next((c["additionalProperties"] for c in candidates if c.get("additionalProperties")), None)
        if found is None:
            return False
        if found is True:
            found = {}
        node = found
    return True


def test_every_accepted_create_param_is_in_the_spec(spec):
    schema = _request_schema(spec, "/v1/checkout/sessions")
    missing = [path for path in param_paths(CREATE_SESSION_PARAMS) if not _spec_has(schema, path)]
    assert missing == []


def test_every_accepted_refund_param_is_in_the_spec(spec):
    schema = _request_schema(spec, "/v1/refunds")
    assert [path for path in param_paths(CREATE_REFUND_PARAMS) if not _spec_has(schema, path)] == []


def test_every_accepted_events_query_param_is_in_the_spec(spec):
    names = {param["name"] for param in spec["paths"]["/v1/events"]["get"]["parameters"]}
    assert {path[0] for path in param_paths(LIST_EVENTS_PARAMS)} <= names


def test_session_in_every_state(spec, emulator_app, stripe_client, browser, webhooks):
    sessions = stripe_client.v1.checkout.sessions
    open_session = sessions.create(params=session_params(customer_email="ada@example.com"))
    assert_valid(spec, "checkout.session", _dict(open_session))
    assert_valid(spec, "checkout.session", _dict(sessions.retrieve(open_session.id, params={"expand": ["line_items"]})))

    pay(browser, open_session)
    assert_valid(spec, "checkout.session", _dict(sessions.retrieve(open_session.id)))

    delayed = sessions.create(params=session_params())
    pay(browser, delayed, method="bank_transfer")
    assert_valid(spec, "checkout.session", _dict(sessions.retrieve(delayed.id)))
    stripe_emulator.tick(emulator_app, now=time.time() + 10)

    assert_valid(spec, "checkout.session", _dict(sessions.expire(sessions.create(params=session_params()).id)))

    items = _dict(stripe_client.v1.checkout.sessions.line_items.list(open_session.id))
    assert items["object"] == "list"
    for item in items["data"]:
        assert_valid(spec, "item", item)

    events = _dict(stripe_client.v1.events.list(params={"limit": 100}))["data"]
    assert {event["type"] for event in events} == {
        "checkout.session.completed", "checkout.session.async_payment_succeeded", "checkout.session.expired"
    }
    for event in events:
        assert_valid(spec, "event", event)
        assert_valid(spec, "checkout.session", event["data"]["object"])
    assert webhooks.calls
    for _, body, _ in webhooks.calls:
        assert_valid(spec, "event", json.loads(body))


def test_refund_and_charge(spec, stripe_client, browser):
    session = stripe_client.v1.checkout.sessions.create(params=session_params())
    pay(browser, session)
    payment_intent = stripe_client.v1.checkout.sessions.retrieve(session.id).payment_intent
    refund = stripe_client.v1.refunds.create(params={"payment_intent": payment_intent, "amount": 100})
    assert_valid(spec, "refund", _dict(refund))
    event = _dict(stripe_client.v1.events.list(params={"type": "charge.refunded"}))["data"][0]
    assert_valid(spec, "event", event)
    assert_valid(spec, "charge", event["data"]["object"])


def test_errors(spec, browser):
    headers = {"Authorization": "Bearer sk_test_x"}
    responses = [
        browser.post("/_stripe/v1/checkout/sessions", data={"mode": "payment"}, headers=headers),
        browser.get("/_stripe/v1/checkout/sessions/cs_test_missing", headers=headers),
        browser.get("/_stripe/v1/events", headers={"Authorization": "Bearer sk_live_x"}),
        browser.get("/_stripe/v1/nothing", headers=headers),
    ]
    for response in responses:
        assert response.status_code >= 400
        assert_valid(spec, "error", response.json)


def test_the_shops_checkout_request_uses_only_spec_parameters(spec, app, shop):
    """What the shop really sends (recorded on the wire), checked name by name against the spec."""
    from urllib.parse import parse_qsl

    from tests.helpers import record_stripe_calls

    recorder = record_stripe_calls(app)
    assert shop.checkout({"field-notebook": 2, "canvas-tote": 1}).status_code == 303
    [(_, _, _, body)] = recorder.posts_to("/v1/checkout/sessions")
    schema = _request_schema(spec, "/v1/checkout/sessions")
    sent = [key for key, _ in parse_qsl(body)]
    paths = {tuple(part for part in key.replace("]", "").split("[") if not part.isdigit()) for key in sent}
    assert {"line_items", "price_data", "unit_amount"} <= {name for path in paths for name in path}
    unknown = sorted(path for path in paths if not _spec_has(schema, path))
    assert not unknown, f"the shop sends parameters Stripe's spec doesn't define: {unknown}"
    assert set(schema.get("required", [])) <= {path[0] for path in paths}


def test_other_integrations_events_match_the_spec(spec, database_url):
    """Every shape of foreign traffic, as listed by the API, validates as an event and as its object."""
    from shop.stripe_emulator import foreign

    from .conftest import make_emulator_app, sdk_client

    app = make_emulator_app(database_url, STRIPE_EMULATOR_FOREIGN_TRAFFIC=12)
    client = sdk_client(app)
    client.v1.checkout.sessions.expire(client.v1.checkout.sessions.create(params=session_params()).id)
    events = _dict(client.v1.events.list(params={"limit": 100}))["data"]
    for story in foreign.STORIES.values():  # each story at least once, whatever the draw
        events.extend({"object": "event", "type": kind, "data": {"object": obj}} for kind, obj, _ in story(time.time()))
    types = {event["type"] for event in events}
    assert {"charge.succeeded", "charge.refunded", "payment_intent.succeeded", "customer.created"} <= types
    for event in events:
        if "id" in event:
            assert_valid(spec, "event", event)
        obj = event["data"]["object"]
        assert_valid(spec, obj["object"], obj)


def test_foreign_objects_have_the_fields_of_stripes_published_fixtures(spec, monkeypatch):
    """The fixture objects' fields that the 2023 spec also knows are all present, at every
    API version, except a charge's `refunds`: not included since 2022-11-15."""
    import stripe

    from shop.stripe_emulator import foreign, objects

    fixtures = json.loads(stripe_reference("fixtures3.json").read_text(encoding="utf-8"))["resources"]
    for version in (*foreign.OLDER_API_VERSIONS, stripe.api_version):
        monkeypatch.setattr(foreign, "_api_version", lambda version=version: version)
        for story in foreign.STORIES.values():
            for _, obj, _ in story(time.time()):
                known = set(spec["components"]["schemas"][obj["object"]]["properties"])
                if obj["object"] == "charge" and not objects.refunds_included(version):
                    known.discard("refunds")
                missing = (set(fixtures[obj["object"]]) & known) - set(obj)
                assert not missing, f"{obj['object']} at {version} lacks {sorted(missing)}"


def test_sessions_list_matches_the_spec(spec, database_url, monkeypatch):
    """The list, filtered by a payment of ours, another integration's, and none, in Stripe's list shape."""
    from shop.stripe_emulator import foreign

    from .conftest import make_emulator_app, sdk_client

    monkeypatch.setattr(foreign, "traffic", foreign.other_payment)
    app = make_emulator_app(database_url, STRIPE_EMULATOR_FOREIGN_TRAFFIC=1)
    client = sdk_client(app)
    sessions = client.v1.checkout.sessions
    client.v1.checkout.sessions.expire(sessions.create(params=session_params()).id)
    theirs = client.v1.events.list(params={"type": "checkout.session.completed"}).data[0].data.object.payment_intent
    list_schema = spec["paths"]["/v1/checkout/sessions"]["get"]["responses"]["200"]["content"]["application/json"]
    names = {param["name"] for param in spec["paths"]["/v1/checkout/sessions"]["get"]["parameters"]}
    # `created` is newer than the 2023 spec: the SDK's typed parameters (today's API) have it.
    assert "created" not in names and "created" in SessionListParams.__annotations__
    assert {path[0] for path in param_paths(LIST_SESSIONS_PARAMS)} <= names | {"created"}

    for params in ({"limit": 1}, {"payment_intent": theirs}, {"payment_intent": "pi_none"}, {}, {"created": {"gte": 1}}):
        listed = _dict(sessions.list(params=params))
        errors = list(OAS30Validator({**list_schema["schema"], "components": spec["components"]}).iter_errors(listed))
        assert not errors, [error.message[:300] for error in errors]
        assert listed["url"] == "/v1/checkout/sessions"
        for session in listed["data"]:
            assert_valid(spec, "checkout.session", session)
    assert len(_dict(sessions.list(params={"payment_intent": theirs}))["data"]) == 1
    everything = _dict(sessions.list(params={"limit": 100}))["data"]
    oldest = min(session["created"] for session in everything)
    assert len(_dict(sessions.list(params={"created": {"gte": oldest}, "limit": 100}))["data"]) == len(everything)
    assert _dict(sessions.list(params={"created": {"lt": oldest}}))["data"] == []


def test_webhook_endpoints_match_the_spec(spec, stripe_client):
    """Create, list, retrieve, update and delete, each answer in the spec's shape; every parameter in it."""
    schema = _request_schema(spec, "/v1/webhook_endpoints")
    assert [path for path in param_paths(CREATE_WEBHOOK_ENDPOINT_PARAMS) if not _spec_has(schema, path)] == []
    update_schema = _request_schema(spec, "/v1/webhook_endpoints/{webhook_endpoint}")
    assert [path for path in param_paths(UPDATE_WEBHOOK_ENDPOINT_PARAMS) if not _spec_has(update_schema, path)] == []
    endpoints = stripe_client.v1.webhook_endpoints

    created = _dict(endpoints.create(params={"url": "https://shop.example/webhooks/stripe",
                                             "enabled_events": ["charge.refunded"], "api_version": "2024-06-20"}))
    assert created["secret"].startswith("whsec_") and created["api_version"] == "2024-06-20"
    listed = _dict(endpoints.list())
    list_schema = spec["paths"]["/v1/webhook_endpoints"]["get"]["responses"]["200"]["content"]["application/json"]
    errors = list(OAS30Validator({**list_schema["schema"], "components": spec["components"]}).iter_errors(listed))
    assert not errors, [error.message[:300] for error in errors]
    assert [e["id"] for e in listed["data"]] == [created["id"], "we_emulator0own0endpoint0"]
    assert all("secret" not in e for e in listed["data"])  # only the creation answer carries it
    updated = _dict(endpoints.update(created["id"], params={"disabled": True, "enabled_events": ["*"]}))
    for endpoint in (created, *listed["data"], updated, _dict(endpoints.retrieve(created["id"]))):
        assert_valid(spec, "webhook_endpoint", endpoint)
    assert (updated["status"], updated["enabled_events"]) == ("disabled", ["*"])
    assert_valid(spec, "deleted_webhook_endpoint", _dict(endpoints.delete(created["id"])))
    with pytest.raises(stripe.InvalidRequestError):
        endpoints.retrieve(created["id"])
    with pytest.raises(stripe.InvalidRequestError, match="enabled_events"):
        endpoints.create(params={"url": "https://shop.example/x", "enabled_events": ["not an event"]})


def test_disputes_and_failed_refunds_validate(spec, emulator_app, stripe_client, browser):
    """A chargeback (test card 0259) won with evidence, and a refund that fails (card 5126)."""
    disputed = stripe_client.v1.checkout.sessions.create(params=session_params())
    pay(browser, disputed, card="4000 0000 0000 0259")
    [created] = _dict(stripe_client.v1.events.list(params={"type": "charge.dispute.created"}))["data"]
    dispute = created["data"]["object"]
    assert (dispute["status"], dispute["reason"], dispute["is_charge_refundable"]) == ("needs_response", "fraudulent", False)
    won = stripe_client.v1.disputes.update(dispute["id"], params={"evidence": {"uncategorized_text": "winning_evidence"}})
    assert won.status == "won"
    assert_valid(spec, "dispute", _dict(won))

    failing = stripe_client.v1.checkout.sessions.create(params=session_params())
    pay(browser, failing, card="4000 0000 0000 5126")
    refund = stripe_client.v1.refunds.create(
        params={"payment_intent": stripe_client.v1.checkout.sessions.retrieve(failing.id).payment_intent}
    )
    assert refund.status == "succeeded"  # at first
    stripe_emulator.tick(emulator_app, now=time.time() + 3600)
    events = _dict(stripe_client.v1.events.list(params={"limit": 100}))["data"]
    assert {"charge.dispute.funds_withdrawn", "charge.dispute.updated", "charge.dispute.closed",
            "charge.dispute.funds_reinstated", "refund.created", "refund.updated", "refund.failed"} <= {
        event["type"] for event in events}
    for event in events:
        assert_valid(spec, "event", event)
        obj = event["data"]["object"]
        if obj["object"] in ("dispute", "refund", "charge"):
            assert_valid(spec, obj["object"], obj)
    failed = stripe_client.v1.refunds.retrieve(refund.id)
    assert (failed.status, failed.failure_reason) == ("failed", "expired_or_canceled_card")


@pytest.mark.parametrize("phone", [False, True])
def test_the_shops_shipping_parameters_are_valid_for_the_spec(spec, app, shop, phone):
    """The shipping address countries (from SHIPPING_COUNTRIES) are codes Stripe accepts; the phone by setting."""
    from urllib.parse import parse_qsl

    from tests.helpers import record_stripe_calls

    app.config.update(SHIPPING_COUNTRIES=("US", "CA", "GB"), SHIPPING_PHONE=phone)
    recorder = record_stripe_calls(app)
    assert shop.checkout({"enamel-mug": 1}).status_code == 303
    [(_, _, _, body)] = recorder.posts_to("/v1/checkout/sessions")
    sent = parse_qsl(body)
    countries = [value for key, value in sent if key.startswith("shipping_address_collection[allowed_countries]")]
    assert countries == ["US", "CA", "GB"]
    schema = _request_schema(spec, "/v1/checkout/sessions")["properties"]
    assert set(countries) <= set(schema["shipping_address_collection"]["properties"]["allowed_countries"]["items"]["enum"])
    assert (("phone_number_collection[enabled]", "true") in sent) is phone
    assert "enabled" in schema["phone_number_collection"]["properties"]
