"""The operator view's door: failed sign-ins are throttled per address and per username (on Redis).

Before, 300 wrong passwords in half a second were all answered 401, none slowed.
"""
from __future__ import annotations

import base64
import logging
import time

import pytest

from tests.test_limits import limited_app

OPERATOR = ("operator", "kettle-Orbit-93-lantern")


def credentials(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def sign_in(client, address: str, username: str, password: str):
    return client.get("/admin/", headers={**credentials(username, password), "X-Forwarded-For": address})


@pytest.fixture
def operator_app(database_url: str, redis_url: str, redis_key_prefix: str):
    with limited_app(database_url, redis_url, redis_key_prefix) as app:
        app.config.update(ADMIN_USERNAME=OPERATOR[0], ADMIN_PASSWORD=OPERATOR[1])
        yield app


@pytest.mark.sqlite_only
def test_guessing_from_one_address_is_throttled_with_retry_after_and_logged(operator_app, caplog) -> None:
    guesser = operator_app.test_client()
    logger = logging.getLogger("shop")
    logger.addHandler(caplog.handler)
    try:
        codes = [sign_in(guesser, "203.0.113.80", "operator", f"guess-{n}").status_code for n in range(30)]
    finally:
        logger.removeHandler(caplog.handler)
    assert codes == [401] * 5 + [429] * 25  # 5 failures a minute per address
    refused = sign_in(guesser, "203.0.113.80", *OPERATOR)  # even the right password waits: no oracle
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many failed sign-ins" in refused.get_data(as_text=True)
    assert "operator sign-in failed for user 'operator' from 203.0.113.80" in caplog.text
    assert "operator sign-in throttled (5 per 1 minute) for user 'operator' from 203.0.113.80" in caplog.text

    # A bare request (the browser's first, before it asks for a password) is no guess.
    assert {operator_app.test_client().get("/admin/", headers={"X-Forwarded-For": "198.51.100.80"}).status_code
            for _ in range(10)} == {401}


@pytest.mark.sqlite_only
def test_guessing_one_username_from_many_addresses_never_locks_the_operator_out(operator_app) -> None:
    # The operator signed in once from their browser.
    operator = operator_app.test_client()
    assert sign_in(operator, "192.0.2.10", *OPERATOR).status_code == 200

    # Guesses at their username from many addresses (a few each, under the per-address limit).
    codes = [
        sign_in(operator_app.test_client(), f"203.0.113.{n // 3 + 1}", "operator", f"guess-{n}").status_code
        for n in range(30)
    ]
    assert codes == [401] * 20 + [429] * 10  # 20 failures a minute per username, whatever the address

    # A new browser must wait; the operator's own browser still signs in at once.
    assert sign_in(operator_app.test_client(), "192.0.2.11", *OPERATOR).status_code == 429
    started = time.perf_counter()
    assert sign_in(operator, "192.0.2.10", *OPERATOR).status_code == 200
    assert time.perf_counter() - started < 1
