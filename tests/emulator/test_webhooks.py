"""Events delivered as signed webhooks: retries, chaos switches, transports, persistence."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import stripe
from flask import request

from shop import stripe_emulator
from shop.extensions import csrf, db
from shop.stripe_emulator.models import Delivery
from shop.stripe_emulator.transport import http_transport

from .conftest import Recorder, make_emulator_app, sdk_client, session_params


def _expire_one(client: stripe.StripeClient) -> str:
    session = client.v1.checkout.sessions.create(params=session_params())
    client.v1.checkout.sessions.expire(session.id)
    return session.id


def _deliveries(app) -> list[tuple[str, int, int | None]]:
    with app.app_context():
        return [(d.status, d.attempts, d.last_status) for d in db.session.query(Delivery).order_by(Delivery.id)]


def test_config_defaults(emulator_app):
    config = emulator_app.config
    assert config["STRIPE_API_BASE"] == "http://127.0.0.1:5000/_stripe"
    assert config["STRIPE_SECRET_KEY"] == "sk_test_emulator"
    assert config["STRIPE_WEBHOOK_SECRETS"][0].startswith("whsec_")
    settings = emulator_app.extensions["stripe_emulator"].settings
    assert settings.webhook_url is None  # no override: each session records where its shop was reached
    assert (settings.deliver_in_process, settings.delay) == (True, 0)
    assert emulator_app.extensions["stripe_emulator"].worker is None
    assert emulator_app.jinja_env.globals["stripe_offline"] is True


def test_signed_delivery(emulator_app, stripe_client, webhooks):
    session_id = _expire_one(stripe_client)
    assert stripe_emulator.tick(emulator_app) == 1
    url, body, headers = webhooks.calls[0]
    assert url == "http://127.0.0.1:5000/webhooks/stripe"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    secret = emulator_app.config["STRIPE_WEBHOOK_SECRETS"][0]
    event = stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], secret)
    assert event.type == "checkout.session.expired"
    assert event.data.object.id == session_id
    assert event.api_version == stripe.api_version
    assert event.pending_webhooks == 1
    assert stripe_emulator.tick(emulator_app) == 0
    assert _deliveries(emulator_app) == [("delivered", 1, 200)]
    assert stripe_client.v1.events.retrieve(event.id).pending_webhooks == 0


def test_retry_after_500_and_connection_error(emulator_app, stripe_client, webhooks):
    webhooks.statuses = [500, ConnectionRefusedError("refused")]
    _expire_one(stripe_client)
    start = time.time()
    assert stripe_emulator.tick(emulator_app, now=start) == 1
    assert _deliveries(emulator_app) == [("pending", 1, 500)]
    assert stripe_emulator.tick(emulator_app, now=start + 0.5) == 0  # backoff: 1 s
    assert stripe_emulator.tick(emulator_app, now=start + 1.1) == 1
    assert _deliveries(emulator_app) == [("pending", 2, None)]
    assert stripe_emulator.tick(emulator_app, now=start + 2.5) == 0  # backoff: 2 s
    assert stripe_emulator.tick(emulator_app, now=start + 3.2) == 1
    assert _deliveries(emulator_app) == [("delivered", 3, 200)]
    assert len({body for _, body, _ in webhooks.calls}) == 1


def test_gives_up_after_max_attempts(emulator_app, stripe_client, webhooks):
    webhooks.statuses = [503] * 20
    _expire_one(stripe_client)
    now = time.time()
    for _ in range(20):
        stripe_emulator.tick(emulator_app, now=now)
        now += 120
    assert _deliveries(emulator_app) == [("failed", 8, 503)]
    assert len(webhooks.calls) == 8


def test_duplicate(database_url):
    app = make_emulator_app(database_url, STRIPE_EMULATOR_DUPLICATE=True)
    webhooks = app.extensions["stripe_emulator"].transport = Recorder()
    _expire_one(sdk_client(app))
    assert stripe_emulator.tick(app) == 2
    first, second = (json.loads(body) for _, body, _ in webhooks.calls)
    assert first["id"] == second["id"]


def test_shuffle(database_url):
    app = make_emulator_app(database_url, STRIPE_EMULATOR_SHUFFLE=True)
    webhooks = app.extensions["stripe_emulator"].transport = Recorder()
    client = sdk_client(app)
    expected = [_expire_one(client) for _ in range(8)]
    stripe_emulator.tick(app)
    delivered = [json.loads(body)["data"]["object"]["id"] for _, body, _ in webhooks.calls]
    assert sorted(delivered) == sorted(expected)
    assert delivered != expected  # 1 in 40320 chance of a false failure


def test_drop(database_url):
    app = make_emulator_app(database_url, STRIPE_EMULATOR_DROP=1)
    webhooks = app.extensions["stripe_emulator"].transport = Recorder()
    _expire_one(sdk_client(app))
    assert stripe_emulator.tick(app) == 1
    assert stripe_emulator.tick(app, now=time.time() + 3600) == 0
    assert webhooks.calls == []
    assert _deliveries(app) == [("dropped", 1, None)]


def test_delay_and_in_process_delivery(database_url):
    """The default transport posts into the app itself (here to a test receiver), after the delay."""
    app = make_emulator_app(
        database_url, STRIPE_EMULATOR_DELAY=5, STRIPE_EMULATOR_WEBHOOK_URL="http://shop.test/_test/hook"
    )
    received: list[dict] = []

    @app.post("/_test/hook")
    def hook():
        received.append({"host": request.host, "body": request.get_data(as_text=True),
                         "signature": request.headers["Stripe-Signature"]})
        return "", 204

    csrf.exempt(hook)
    _expire_one(sdk_client(app))
    assert stripe_emulator.tick(app) == 0
    assert stripe_emulator.tick(app, now=time.time() + 6) == 1
    assert received[0]["host"] == "shop.test"
    stripe.Webhook.construct_event(received[0]["body"], received[0]["signature"],
                                   app.config["STRIPE_WEBHOOK_SECRETS"][0])
    assert _deliveries(app) == [("delivered", 1, 204)]


def test_http_transport_connection_error(database_url):
    app = make_emulator_app(
        database_url, STRIPE_EMULATOR_DELIVER_IN_PROCESS=False, STRIPE_EMULATOR_WEBHOOK_URL="http://127.0.0.1:9/hook"
    )
    _expire_one(sdk_client(app))
    assert stripe_emulator.tick(app) == 1
    with app.app_context():
        delivery = db.session.query(Delivery).one()
        assert (delivery.status, delivery.last_status) == ("pending", None)
        assert delivery.last_error.startswith("connection error")


def test_http_transport_treats_a_redirect_as_a_failure():
    """Stripe doesn't follow redirects from a webhook endpoint: the delivery must be retried."""
    requests: list[str] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            requests.append(f"POST {self.path}")
            self.send_response(302)
            self.send_header("Location", "/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            requests.append(f"GET {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert http_transport(url, b"{}", {"Content-Type": "application/json"}) == 302
    finally:
        server.shutdown()
        server.server_close()
    assert requests == ["POST /hook"]


def test_state_survives_a_second_app(database_url, emulator_app, stripe_client):
    params = session_params()
    session = stripe_client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "k"})
    second = make_emulator_app(database_url)
    assert second.config["STRIPE_WEBHOOK_SECRETS"] == emulator_app.config["STRIPE_WEBHOOK_SECRETS"]
    other = sdk_client(second)
    assert other.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert other.v1.checkout.sessions.create(params=params, options={"idempotency_key": "k"}).id == session.id
    other.v1.checkout.sessions.expire(session.id)
    assert stripe_client.v1.events.list().data[0].data.object.id == session.id


def test_worker_thread_starts_with_the_first_request_and_delivers(database_url):
    app = make_emulator_app(database_url, STRIPE_EMULATOR_WORKER=True)
    webhooks = app.extensions["stripe_emulator"].transport = Recorder()
    emulator = app.extensions["stripe_emulator"]
    assert emulator.worker is None  # building the app (e.g. for a CLI command) starts nothing
    app.test_client().get("/")
    try:
        assert emulator.worker.is_alive()
        _expire_one(sdk_client(app))
        deadline = time.time() + 5
        while not webhooks.calls and time.time() < deadline:
            time.sleep(0.1)
    finally:
        emulator.stop_worker()
    assert webhooks.types == ["checkout.session.expired"]
    assert not emulator.worker.is_alive()


@pytest.mark.parametrize("value", ["1", "true", "on"])
def test_env_switches(monkeypatch, database_url, value):
    monkeypatch.setenv("STRIPE_EMULATOR_DUPLICATE", value)
    monkeypatch.setenv("STRIPE_EMULATOR_URL", "http://localhost:8000/_stripe/")
    app = make_emulator_app(database_url)
    assert app.extensions["stripe_emulator"].settings.duplicate is True
    assert app.config["STRIPE_API_BASE"] == "http://localhost:8000/_stripe"
    assert app.extensions["stripe_emulator"].settings.webhook_url == "http://localhost:8000/webhooks/stripe"
