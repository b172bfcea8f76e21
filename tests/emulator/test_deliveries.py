"""The success page says so, in offline mode, when a payment's webhook can't reach the shop."""
from __future__ import annotations

import time

from shop import stripe_emulator
from tests.helpers import get_order, pay


def fail_first(app, answers: list[int | Exception]) -> None:
    """The emulator's deliveries get these answers first, then reach the shop again."""
    emulator = app.extensions["stripe_emulator"]
    working = emulator.transport

    def transport(url, body, headers):
        if not answers:
            return working(url, body, headers)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    emulator.transport = transport


def test_a_sessions_failing_deliveries_are_listed_with_url_answer_and_next_attempt(app, shop):
    fail_first(app, [ConnectionRefusedError(111, "Connection refused")])
    order = shop.start({"enamel-mug": 1})
    deliveries_url = f"/_stripe/deliveries/{order.stripe_session_id}"
    assert shop.http.get(deliveries_url).get_json() == {"failing": False, "deliveries": []}

    pay(shop, order.checkout_url)
    now = time.time()
    stripe_emulator.tick(app, now=now)
    answer = shop.http.get(deliveries_url)
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["failing"] is True
    (delivery,) = body["deliveries"]
    assert delivery["event"] == "checkout.session.completed"
    assert delivery["url"] == "http://localhost/webhooks/stripe"
    assert delivery["attempts"] == 1
    assert delivery["answer"] == "connection error: [Errno 111] Connection refused"
    first_retry = app.extensions["stripe_emulator"].settings.retry_schedule[0]
    assert 0 < delivery["next_attempt_in"] <= first_retry

    # Another session's trouble is not this one's.
    other = shop.start({"canvas-tote": 1})
    assert shop.http.get(f"/_stripe/deliveries/{other.stripe_session_id}").get_json()["failing"] is False

    stripe_emulator.tick(app, now=now + first_retry + 0.1)
    assert get_order(app, order.public_id).status == "paid"
    assert shop.http.get(deliveries_url).get_json() == {"failing": False, "deliveries": []}


def test_a_delivery_given_up_on_has_no_next_attempt(app, shop):
    settings = app.extensions["stripe_emulator"].settings
    fail_first(app, [400] * (len(settings.retry_schedule) + 1))
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url)
    now = time.time()
    for delay in (0, *settings.retry_schedule):
        now += delay + 0.1
        stripe_emulator.tick(app, now=now)
    (delivery,) = shop.http.get(f"/_stripe/deliveries/{order.stripe_session_id}").get_json()["deliveries"]
    assert (delivery["answer"], delivery["next_attempt_in"]) == ("answered HTTP 400", None)
    assert delivery["attempts"] == len(settings.retry_schedule) + 1


def test_the_success_page_carries_the_delivery_check(app, shop):
    order = shop.start({"enamel-mug": 1})
    page = shop.http.get(f"/checkout/success?session_id={order.stripe_session_id}").get_data(as_text=True)
    assert f'data-deliveries-url="/_stripe/deliveries/{order.stripe_session_id}"' in page
    assert "/static/js/webhook-deliveries.js" in page
    assert "flask --app wsgi stripe sync" in page
