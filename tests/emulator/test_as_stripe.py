"""The emulator's "Stripe as it really is" settings: retry schedules, idempotency that replays
failures, 30 days of events listed by `created`, other integrations' traffic, refunds that
overtake their payment, restricted keys, and the hostile mode that turns them all on."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe
from sqlalchemy import func, select, update

from shop import stripe_emulator
from shop.extensions import db
from shop.stripe_emulator import core, foreign
from shop.stripe_emulator.models import CheckoutSession, Delivery, Event, IdempotencyKey

from .conftest import Recorder, make_emulator_app, pay, session_params

HOUR = 3600
DAY = 24 * HOUR


def client_for(app, key: str = "sk_test_x") -> stripe.StripeClient:
    """An SDK client that doesn't retry, so each call is one request."""
    return stripe.StripeClient(
        key, base_addresses={"api": app.config["STRIPE_API_BASE"]},
        http_client=app.extensions["stripe_http_client"], max_network_retries=0,
    )


def emulator(database_url: str, **settings: Any):
    app = make_emulator_app(database_url, **settings)
    recorder = app.extensions["stripe_emulator"].transport = Recorder()
    return app, recorder


def expire_one(client: stripe.StripeClient) -> str:
    session = client.v1.checkout.sessions.create(params=session_params())
    client.v1.checkout.sessions.expire(session.id)
    return session.id


def deliveries(app) -> list[tuple[str, int]]:
    with app.app_context():
        return [(d.status, d.attempts) for d in db.session.scalars(select(Delivery).order_by(Delivery.id))]


def attempt_times(app, start: float, horizon: float, step: float = 60.0) -> list[float]:
    """Tick every `step` seconds up to `horizon`; the offsets (from `start`) of each attempt."""
    times = []
    offset = 0.0
    while offset <= horizon:
        if stripe_emulator.tick(app, now=start + offset):
            times.append(offset)
        offset += step
    return times


# --- Retry schedules ---------------------------------------------------------------------------


def test_live_retries_back_off_exponentially_for_up_to_three_days(database_url):
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_RETRIES="live")
    webhooks.statuses = [500] * 20
    expire_one(client_for(app))
    start = time.time()
    times = attempt_times(app, start, 4 * DAY, step=15 * 60)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert gaps == [HOUR * 2**n for n in range(6)]  # hours apart, each twice the last
    assert times[-1] <= 3 * DAY
    assert deliveries(app) == [("failed", 7)]


def test_sandbox_retries_three_times_over_a_few_hours(database_url):
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_RETRIES="test")
    webhooks.statuses = [503] * 10
    expire_one(client_for(app))
    start = time.time()
    times = attempt_times(app, start, DAY, step=10 * 60)
    assert len(times) == 4 and times[-1] <= 4 * HOUR
    assert deliveries(app) == [("failed", 4)]


def test_stripe_listen_never_retries_but_an_event_can_be_resent(database_url):
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_RETRIES="none")
    webhooks.statuses = [ConnectionRefusedError("shop down")]
    expire_one(client_for(app))
    start = time.time()
    assert attempt_times(app, start, 3 * DAY, step=HOUR) == [0]
    assert deliveries(app) == [("failed", 1)]

    event_id = json.loads(webhooks.calls[0][1])["id"]
    assert stripe_emulator.resend(app, event_id, now=start + 3 * DAY)
    assert stripe_emulator.tick(app, now=start + 3 * DAY) == 1
    assert deliveries(app) == [("failed", 1), ("delivered", 1)]
    assert [json.loads(body)["id"] for _, body, _ in webhooks.calls] == [event_id, event_id]
    assert not stripe_emulator.resend(app, "evt_unknown")


def test_unknown_retry_schedule_is_refused(database_url):
    with pytest.raises(ValueError, match="STRIPE_EMULATOR_RETRIES"):
        make_emulator_app(database_url, STRIPE_EMULATOR_RETRIES="sometimes")


# --- Refunds overtaking their payment ----------------------------------------------------------


def test_refund_overtakes_a_payment_whose_delivery_failed(database_url):
    """After a failed attempt the payment waits an hour; its refund, a new event, goes first."""
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_RETRIES="live")
    client = client_for(app)
    session = client.v1.checkout.sessions.create(params=session_params())
    pay(app.test_client(), session)
    start = time.time()
    webhooks.statuses = [500]  # the shop fails the completed event once
    assert stripe_emulator.tick(app, now=start) == 1

    payment_intent = client.v1.checkout.sessions.retrieve(session.id).payment_intent
    client.v1.refunds.create(params={"payment_intent": payment_intent})
    stripe_emulator.tick(app, now=start + 60)
    stripe_emulator.tick(app, now=start + HOUR + 60)

    assert webhooks.types == [
        "checkout.session.completed", "refund.created", "charge.refunded", "checkout.session.completed"
    ]
    refunded = json.loads(webhooks.calls[2][1])["data"]["object"]
    assert refunded["payment_intent"] == payment_intent and refunded["refunded"] is True


def test_shuffle_delivers_a_refund_before_its_payment(database_url):
    """Made before the next tick, a refund and its payment are due together: either comes first."""
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_SHUFFLE=True)
    client = client_for(app)
    browser = app.test_client()
    firsts = set()
    for _ in range(30):
        session = client.v1.checkout.sessions.create(params=session_params())
        pay(browser, session)
        client.v1.refunds.create(params={"payment_intent": client.v1.checkout.sessions.retrieve(session.id).payment_intent})
        webhooks.calls.clear()
        stripe_emulator.tick(app)
        assert sorted(webhooks.types) == ["charge.refunded", "checkout.session.completed", "refund.created"]
        firsts.add(webhooks.types[0])
        if "checkout.session.completed" in firsts and len(firsts) >= 2:
            break
    # A refund's event first, and the payment's first: each misses 30 rounds with chance below 0.7**30.
    assert "checkout.session.completed" in firsts and len(firsts) >= 2


# --- Idempotency as Stripe saves it ------------------------------------------------------------


def test_a_500_after_the_work_began_is_replayed_under_its_key(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_SAVE_FAILED_REQUESTS=True)
    client = client_for(app)
    app.extensions["stripe_emulator"].failures.add("POST", "/v1/checkout/sessions", work_committed=True)
    options = {"idempotency_key": "order-1"}
    params = session_params()

    with pytest.raises(stripe.APIError) as first:
        client.v1.checkout.sessions.create(params=params, options=options)
    assert first.value.http_status == 500 and first.value.json_body["error"]["type"] == "api_error"
    with pytest.raises(stripe.APIError) as again:
        client.v1.checkout.sessions.create(params=params, options=options)
    assert again.value.http_status == 500
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert again.value.headers["Original-Request"] == first.value.request_id
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(CheckoutSession)) == 1  # made, but lost

    # 24 hours later Stripe has pruned the key: the same request runs again.
    stripe_emulator.tick(app, now=time.time() + DAY + 60)
    assert client.v1.checkout.sessions.create(params=session_params(), options=options).status == "open"


def test_a_500_whose_work_rolled_back_is_replayed_too(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_SAVE_FAILED_REQUESTS=True)
    client = client_for(app)
    app.extensions["stripe_emulator"].failures.add("POST", "/v1/checkout/sessions")
    options = {"idempotency_key": "order-2"}
    params = session_params()
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.checkout.sessions.create(params=params, options=options)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(CheckoutSession)) == 0
    assert client.v1.checkout.sessions.create(params=session_params(), options={"idempotency_key": "order-3"}).id


def test_an_error_after_execution_began_is_replayed_but_a_validation_error_is_not(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_SAVE_FAILED_REQUESTS=True)
    client = client_for(app)
    session = client.v1.checkout.sessions.create(params=session_params())
    client.v1.checkout.sessions.expire(session.id)

    # The endpoint ran and refused: that answer is what the key now means.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "expire-1"})
    with pytest.raises(stripe.InvalidRequestError) as replayed:
        client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "expire-1"})
    assert replayed.value.headers["Idempotent-Replayed"] == "true"
    assert replayed.value.user_message == refused.value.user_message

    # Parameters that fail validation save nothing: the corrected request may reuse the key.
    options = {"idempotency_key": "fix-and-retry"}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(params=session_params(expires_at=int(time.time()) + 60), options=options)
    assert client.v1.checkout.sessions.create(params=session_params(), options=options).status == "open"


def test_without_the_setting_a_failure_releases_the_key(database_url):
    app, _ = emulator(database_url)
    client = client_for(app)
    app.extensions["stripe_emulator"].failures.add("POST", "/v1/checkout/sessions")
    options = {"idempotency_key": "order-4"}
    params = session_params()
    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.create(params=params, options=options)
    assert client.v1.checkout.sessions.create(params=params, options=options).status == "open"


def test_same_key_concurrently_is_409_and_with_other_parameters_400(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_SAVE_FAILED_REQUESTS=True)
    client = client_for(app)
    options = {"idempotency_key": "order-5"}
    params = session_params()
    client.v1.checkout.sessions.create(params=params, options=options)
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.checkout.sessions.create(params={**params, "client_reference_id": "other"}, options=options)
    assert mismatch.value.http_status == 400

    with app.app_context():  # a request holding the key, still executing
        db.session.execute(update(IdempotencyKey).values(status=None, body=None))
        db.session.commit()
    with pytest.raises(stripe.APIError) as busy:  # the SDK has no class of its own for a 409
        client.v1.checkout.sessions.create(params=params, options=options)
    assert busy.value.http_status == 409 and busy.value.json_body["error"]["type"] == "idempotency_error"


# --- Events: newest first by `created`, 30 days -------------------------------------------------


def _set_created(app, event_id: str, created: int) -> None:
    with app.app_context():
        db.session.execute(update(Event).where(Event.id == event_id).values(created=created))
        db.session.commit()


def test_events_are_listed_newest_first_by_created_with_stripes_filters(database_url):
    app, _ = emulator(database_url)
    client = client_for(app)
    for _ in range(4):
        expire_one(client)
    made = [event.id for event in client.v1.events.list().data][::-1]  # in the order they were made
    now = int(time.time())
    # The second one made carries the newest `created` (e.g. emitted by a worker with a later clock).
    created = {made[0]: now - 300, made[1]: now, made[2]: now - 200, made[3]: now - 200}
    for event_id, value in created.items():
        _set_created(app, event_id, value)

    listed = [event.id for event in client.v1.events.list().data]
    assert listed == [made[1], made[3], made[2], made[0]]
    first = client.v1.events.list(params={"limit": 2})
    rest = client.v1.events.list(params={"limit": 2, "starting_after": first.data[-1].id})
    assert [e.id for e in first.data + rest.data] == listed and rest.has_more is False
    back = client.v1.events.list(params={"limit": 2, "ending_before": rest.data[0].id})
    assert [e.id for e in back.data] == listed[:2]

    assert [e.id for e in client.v1.events.list(params={"created": {"gt": now - 200}}).data] == [made[1]]
    assert [e.id for e in client.v1.events.list(params={"created": {"gte": now - 200, "lt": now}}).data] == [
        made[3], made[2]
    ]
    assert {e.id for e in client.v1.events.list(params={"created": {"lte": now - 200}}).data} == {
        made[0], made[2], made[3]
    }


def test_events_older_than_thirty_days_are_gone(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_EVENT_RETENTION_DAYS=30)
    client = client_for(app)
    old, recent = expire_one(client), expire_one(client)
    events = {event.data.object.id: event.id for event in client.v1.events.list().data}
    _set_created(app, events[old], int(time.time()) - 30 * DAY - 60)

    assert [event.id for event in client.v1.events.list(params={"created": {"gt": 0}}).data] == [events[recent]]
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.events.retrieve(events[old])
    assert gone.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params={"starting_after": events[old]})
    assert client.v1.events.retrieve(events[recent]).id == events[recent]

    kept = make_emulator_app(database_url)  # without the setting, nothing is forgotten
    assert len(client_for(kept).v1.events.list().data) == 2


# --- Other integrations' traffic ---------------------------------------------------------------


def test_each_shop_event_brings_foreign_traffic_interleaved(database_url):
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_FOREIGN_TRAFFIC=3, STRIPE_EMULATOR_SHUFFLE=True)
    client = client_for(app)
    session_ids = [expire_one(client) for _ in range(6)]
    stripe_emulator.tick(app)

    delivered = [json.loads(body) for _, body, _ in webhooks.calls]
    own = [e for e in delivered if e["data"]["object"].get("id") in session_ids]
    others = [e for e in delivered if e not in own]
    assert len(own) == 6 and len(others) >= 6 * 3  # each burst is one to three events
    positions = [index for index, e in enumerate(delivered) if e in own]
    assert positions != list(range(6))  # shuffled in among the rest
    assert all(e["api_version"] == stripe.api_version for e in own)
    assert {e["api_version"] for e in others} & set(foreign.OLDER_API_VERSIONS)
    listed = client.v1.events.list(params={"limit": 100}).data
    assert len(listed) == len(delivered)  # sync sees them too


def _story(name: str) -> list[tuple[str, dict, str]]:
    return foreign.STORIES[name](time.time())


def test_foreign_sessions_carry_what_stripe_sends_other_integrations():
    [(kind, setup, _)] = _story("setup_session")
    assert kind == "checkout.session.completed"
    assert (setup["mode"], setup["amount_total"], setup["currency"], setup["payment_intent"]) == (
        "setup", None, None, None
    )
    assert setup["setup_intent"].startswith("seti_") and setup["payment_status"] == "no_payment_required"

    [(_, subscription, _)] = _story("subscription_session")
    assert subscription["mode"] == "subscription" and subscription["payment_intent"] is None
    assert subscription["subscription"].startswith("sub_")

    [(kind, abandoned, _)] = _story("abandoned_session")
    assert kind == "checkout.session.expired"
    assert (abandoned["amount_total"], abandoned["currency"], abandoned["client_reference_id"]) == (None, None, None)

    story = _story("other_payment")
    assert [kind for kind, _, _ in story][:2] == ["checkout.session.completed", "payment_intent.succeeded"]
    session, intent = story[0][1], story[1][1]
    assert session["payment_intent"] == intent["id"] and session["amount_total"] == intent["amount"]
    assert not session["client_reference_id"].startswith("order")


def test_legacy_charges_and_their_refunds_have_no_payment_intent(monkeypatch):
    for version in ("2020-08-27", "2024-06-20"):
        monkeypatch.setattr(foreign, "_api_version", lambda version=version: version)
        (succeeded, charge, _), (refunded, refunded_charge, same_version) = _story("legacy_charge")
        assert (succeeded, refunded, same_version) == ("charge.succeeded", "charge.refunded", version)
        assert charge["payment_intent"] is None and refunded_charge["payment_intent"] is None
        assert refunded_charge["id"] == charge["id"] and refunded_charge["refunded"] is True
        assert refunded_charge["amount_refunded"] == charge["amount"]
    # Only before 2022-11-15 does a charge carry its refunds list.
    assert "refunds" not in refunded_charge
    monkeypatch.setattr(foreign, "_api_version", lambda: "2020-08-27")
    [_, (_, old_charge, _)] = _story("legacy_charge")
    [refund] = old_charge["refunds"]["data"]
    assert refund["payment_intent"] is None and refund["charge"] == old_charge["id"]


def test_the_shops_own_refund_events_carry_no_refunds_list(database_url):
    """At the SDK's API version (after 2022-11-15) a charge's refunds aren't in the event."""
    app, webhooks = emulator(database_url)
    client = client_for(app)
    session = client.v1.checkout.sessions.create(params=session_params())
    pay(app.test_client(), session)
    client.v1.refunds.create(params={"payment_intent": client.v1.checkout.sessions.retrieve(session.id).payment_intent})
    stripe_emulator.tick(app)
    [refunded] = [json.loads(body) for _, body, _ in webhooks.calls if json.loads(body)["type"] == "charge.refunded"]
    assert refunded["data"]["object"]["amount_refunded"] == 3000 and "refunds" not in refunded["data"]["object"]


def test_foreign_events_bring_no_foreign_events_of_their_own(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_FOREIGN_TRAFFIC=1)
    expire_one(client_for(app))
    with app.app_context():
        events = db.session.scalars(select(Event).order_by(Event.seq)).all()
    assert events[0].type == "checkout.session.expired" and events[0].api_version == stripe.api_version
    assert 2 <= len(events) <= 5  # the shop's own, then one burst (the longest story has four events)


# --- Keys --------------------------------------------------------------------------------------


def test_restricted_test_keys_are_accepted_live_keys_refused(database_url):
    app, _ = emulator(database_url)
    assert client_for(app, "rk_test_51abcdefgh").v1.checkout.sessions.create(params=session_params()).id
    for key in ("rk_live_51abcdefgh1234", "sk_live_51abcdefgh1234"):
        with pytest.raises(stripe.AuthenticationError) as refused:
            client_for(app, key).v1.events.list()
        assert refused.value.http_status == 401
        assert f"Invalid API Key provided: {key[:8]}" in refused.value.user_message
        assert key[8:-4] not in refused.value.user_message


# --- The hostile mode --------------------------------------------------------------------------


def test_hostile_mode_turns_every_setting_on_and_explicit_settings_win(database_url, monkeypatch):
    monkeypatch.setenv("STRIPE_EMULATOR_HOSTILE", "1")
    settings = make_emulator_app(database_url).extensions["stripe_emulator"].settings
    assert settings.retry_schedule == core.RETRY_SCHEDULES["live"]
    assert settings.save_failed_requests and settings.duplicate and settings.shuffle
    assert settings.event_retention == 30 * DAY
    assert settings.foreign_traffic == 2

    monkeypatch.setenv("STRIPE_EMULATOR_RETRIES", "none")
    monkeypatch.setenv("STRIPE_EMULATOR_FOREIGN_TRAFFIC", "0")
    settings = make_emulator_app(database_url).extensions["stripe_emulator"].settings
    assert settings.retry_schedule == () and settings.foreign_traffic == 0 and settings.save_failed_requests


def test_default_mode_is_unchanged(database_url):
    settings = make_emulator_app(database_url).extensions["stripe_emulator"].settings
    assert settings.retry_schedule == core.RETRY_SCHEDULES["fast"]
    assert not settings.save_failed_requests and settings.event_retention is None
    assert settings.foreign_traffic == 0 and not settings.duplicate and not settings.shuffle
    assert settings.latency == 0


def test_events_can_be_filtered_by_delivery_success(database_url):
    app, webhooks = emulator(database_url, STRIPE_EMULATOR_RETRIES="live")
    client = client_for(app)
    webhooks.statuses = [200, 500]
    delivered, failing = expire_one(client), expire_one(client)
    stripe_emulator.tick(app)

    def listed(success: bool) -> list[str]:
        return [e.data.object.id for e in client.v1.events.list(params={"delivery_success": success}).data]

    assert (listed(True), listed(False)) == ([delivered], [failing])


# --- Latency ------------------------------------------------------------------------------------


def test_latency_makes_every_api_request_wait_like_stripe(database_url):
    app, _ = emulator(database_url, STRIPE_EMULATOR_LATENCY="60")
    client = client_for(app)
    waits = []
    for _ in range(3):
        started = time.monotonic()
        client.v1.checkout.sessions.create(params=session_params())
        waits.append(time.monotonic() - started)
    assert min(waits) >= 0.045  # 60 ms, less a quarter at most
    started = time.monotonic()
    with pytest.raises(stripe.AuthenticationError):
        client_for(app, key="sk_live_x").v1.events.list()
    assert time.monotonic() - started >= 0.045  # the network's time comes before Stripe's answer


def test_latency_profiles_and_bad_values(database_url):
    def latency(value: str) -> float:
        return make_emulator_app(database_url, STRIPE_EMULATOR_LATENCY=value).extensions["stripe_emulator"].settings.latency

    assert latency("typical") == 0.4 and latency("slow") == 1.25 and latency("off") == 0 and latency("250") == 0.25
    assert make_emulator_app(database_url).extensions["stripe_emulator"].settings.latency == 0
    for bad in ("fast", "-5", "1e9"):
        with pytest.raises(ValueError, match="STRIPE_EMULATOR_LATENCY"):
            latency(bad)
