"""Offline Stripe: a stateful emulator of the Stripe Checkout API subset the shop uses.

Loaded only when `STRIPE_OFFLINE` is true (development without keys, and tests). The shop
talks to it through the official SDK: `init_app` points `STRIPE_API_BASE` at it and installs
an in-process `stripe.HTTPClient`, so no socket is needed. It serves:

- the API under `/_stripe/v1/...`: Checkout Sessions (create, retrieve, list by `payment_intent` or `created`,
  line_items, expire), Events (list, retrieve), Refunds (create, retrieve) and Webhook Endpoints
  (create, list, retrieve, update, delete: see `endpoints.py`), with Stripe's auth, validation
  errors, `Idempotency-Key` handling, `Request-Id` and `Stripe-Version` headers;
- the hosted payment page at `/_stripe/pay/<session id>` (the session's `url`), with
  Stripe's test cards and delayed (bank transfer) payments;
- signed webhook deliveries of every event, with retries, from a background worker, each
  failed attempt logged at WARNING; `/_stripe/deliveries/<session id>` lists a session's
  failing deliveries for the success page (see `deliveries.py`).

All state is in the database (tables `stripe_emulator_*`, on the emulator's own metadata so
the shop's migrations never see them): gunicorn workers share it and it survives restarts.

Settings (app config first, then the environment):

`STRIPE_EMULATOR_URL`
    Base URL of the emulated API as the SDK should see it (it appends `/v1/...`), e.g. when
    the emulator runs in another process. Default: unset, and the address is derived from
    the request being served, wherever the shop runs (see `addresses.py`).
`STRIPE_EMULATOR_WEBHOOK_URL`
    Where events are POSTed. Default: scheme and host of `STRIPE_EMULATOR_URL` +
    `/webhooks/stripe` when that is set, else the address the server accepted the request
    that created the session on (stored with the session, so every worker agrees).
`STRIPE_EMULATOR_DELIVER_IN_PROCESS`
    Post webhooks into this app's WSGI stack instead of over HTTP. Default: on when testing.
`STRIPE_EMULATOR_DELAY`
    Seconds from an event to its first delivery attempt. Default 1 (0 when testing).
`STRIPE_EMULATOR_ASYNC_DELAY`
    Seconds before a delayed payment method succeeds or fails. Default 5.
`STRIPE_EMULATOR_DUPLICATE`
    Deliver every event twice (to exercise idempotent webhook handling). Default off.
`STRIPE_EMULATOR_SHUFFLE`
    Deliver due events in random order. Default off.
`STRIPE_EMULATOR_DROP`
    Fraction (0..1) of delivery attempts silently dropped and never retried. Default 0.
`STRIPE_EMULATOR_WORKER`
    Run the background worker thread that calls `tick` every half second, from the process's
    first request on. Default: on unless testing.

Stripe as it really is (each off by default; `STRIPE_EMULATOR_HOSTILE=1` turns them all on,
and a setting given explicitly still wins):

`STRIPE_EMULATOR_RETRIES`
    Webhook retry schedule: `fast` (default: seconds apart), `live` (Stripe in live mode:
    exponential backoff over up to three days), `test` (a sandbox: three retries over a few
    hours) or `none` (`stripe listen`: no retries). See `core.RETRY_SCHEDULES`.
`STRIPE_EMULATOR_SAVE_FAILED_REQUESTS`
    Idempotency keys replay a request's error, a 500 included, for 24 hours once the request
    began executing; only a parameter validation error releases the key. Default off: any
    failure releases it.
`STRIPE_EMULATOR_EVENT_RETENTION_DAYS`
    Events older than this are gone from `GET /v1/events` and `GET /v1/events/<id>`. Stripe
    keeps 30 days. Default: forever.
`STRIPE_EMULATOR_FOREIGN_TRAFFIC`
    After each of the shop's events, emit this many bursts of other integrations' events
    (see `foreign.py`). Default 0.
`STRIPE_EMULATOR_ADAPTIVE_PRICING`
    Adaptive Pricing, as for a customer whose local currency is another: `eur:0.92` shows
    them a session's total in euros at 0.92 euro per unit of the session's currency (Stripe's
    rate includes its conversion fee). `amount_total` and `currency` stay the integration's;
    the paid session and its charge carry `presentment_details` (`presentment_amount`,
    `presentment_currency`) and the session `adaptive_pricing.enabled: true`, as Stripe's do
    since API 2025-03-31. A session already in that currency is left alone. Default off.
`STRIPE_EMULATOR_HOSTILE`
    All of the above as Stripe behaves (`live` retries, failed requests saved, 30 days of
    events, 2 foreign bursts per event, Adaptive Pricing at `eur:0.92`), plus duplicated and
    shuffled deliveries, which Stripe also does. Default off.
`STRIPE_EMULATOR_LATENCY`
    Each API request waits like one to Stripe over the internet: `typical` (400 ms), `slow`
    (1,250 ms) or a number of milliseconds, each give or take a quarter. Where the figures
    come from: `latency.py`. Default off (not part of the hostile mode, which tests run).

Restricted keys (`rk_test_...`) are accepted like secret test keys, always.

It also fills in `STRIPE_SECRET_KEY` (`sk_test_emulator`) and `STRIPE_WEBHOOK_SECRETS` (derived
from `SECRET_KEY`, so every worker agrees) when they are empty, and sets the Jinja global
`stripe_offline` so pages can say that payments are simulated.
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DatabaseError

from shop.extensions import csrf, db

from . import api, core, deliveries, latency, pages
from .addresses import FALLBACK_ORIGIN, WEBHOOK_PATH
from .core import Settings, Transport
from .models import Base
from .transport import InProcessHTTPClient, http_transport, wsgi_transport

__all__ = ["Emulator", "Settings", "Transport", "init_app", "resend", "tick"]

logger = logging.getLogger("shop.stripe_emulator")

WORKER_INTERVAL = 0.5
_WEBHOOK_SECRET_LABEL = b"shop.stripe_emulator webhook signing secret"


class Emulator:
    """Per-app emulator state: `app.extensions["stripe_emulator"]`.

    Tests may replace `transport`, a callable `(url, body, headers) -> HTTP status` that
    raises OSError for a connection failure.
    """

    def __init__(self, settings: Settings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self.worker: threading.Thread | None = None
        self.failures = core.FailurePlan()
        self._stopping = threading.Event()
        self._starting = threading.Lock()

    def start_worker(self, app: Flask) -> None:
        """Run `tick` every WORKER_INTERVAL seconds in a daemon thread, logging failures."""
        with self._starting:
            if self.worker is None:
                self.worker = threading.Thread(target=self._work, args=(app,), name="stripe-emulator", daemon=True)
                self.worker.start()

    def stop_worker(self) -> None:
        """Stop the worker thread (if any) and wait for its current tick to finish."""
        self._stopping.set()
        if self.worker is not None:
            self.worker.join()

    def _work(self, app: Flask) -> None:
        while not self._stopping.wait(WORKER_INTERVAL):
            try:
                tick(app)
            except Exception:
                logger.exception("Stripe emulator tick failed")


def init_app(app: Flask) -> None:
    """Point the app's Stripe SDK at the emulator and serve it from this app."""
    configured_url = str(_setting(app, "STRIPE_EMULATOR_URL", "") or "").rstrip("/")
    # Without STRIPE_EMULATOR_URL the in-process client follows the request being served;
    # the base address only matters outside a request (CLI commands).
    app.config["STRIPE_API_BASE"] = configured_url or FALLBACK_ORIGIN + "/_stripe"
    app.extensions["stripe_http_client"] = InProcessHTTPClient(app, follow_the_shop=not configured_url)
    if not app.config.get("STRIPE_SECRET_KEY"):
        app.config["STRIPE_SECRET_KEY"] = "sk_test_emulator"
    if not app.config.get("STRIPE_WEBHOOK_SECRETS"):
        key = str(app.config.get("SECRET_KEY") or "").encode()
        app.config["STRIPE_WEBHOOK_SECRETS"] = ["whsec_" + hmac.new(key, _WEBHOOK_SECRET_LABEL, hashlib.sha256).hexdigest()]

    webhook_url = str(_setting(app, "STRIPE_EMULATOR_WEBHOOK_URL", "") or "")
    if not webhook_url and configured_url:
        base = urlsplit(configured_url)
        webhook_url = f"{base.scheme}://{base.netloc}{WEBHOOK_PATH}"
    hostile = _flag(_setting(app, "STRIPE_EMULATOR_HOSTILE", False))
    retries = str(_setting(app, "STRIPE_EMULATOR_RETRIES", "live" if hostile else "fast")).strip().lower()
    if retries not in core.RETRY_SCHEDULES:
        raise ValueError(f"STRIPE_EMULATOR_RETRIES must be one of {', '.join(core.RETRY_SCHEDULES)}, not {retries!r}")
    # Stripe lists and retrieves events going back up to 30 days.
    retention_days = _setting(app, "STRIPE_EMULATOR_EVENT_RETENTION_DAYS", 30 if hostile else "")
    settings = Settings(
        webhook_url=webhook_url or None,
        deliver_in_process=_flag(_setting(app, "STRIPE_EMULATOR_DELIVER_IN_PROCESS", app.testing)),
        delay=float(_setting(app, "STRIPE_EMULATOR_DELAY", 0 if app.testing else 1)),
        async_delay=float(_setting(app, "STRIPE_EMULATOR_ASYNC_DELAY", 5)),
        duplicate=_flag(_setting(app, "STRIPE_EMULATOR_DUPLICATE", hostile)),
        shuffle=_flag(_setting(app, "STRIPE_EMULATOR_SHUFFLE", hostile)),
        drop=min(max(float(_setting(app, "STRIPE_EMULATOR_DROP", 0)), 0.0), 1.0),
        webhook_secret=app.config["STRIPE_WEBHOOK_SECRETS"][0],
        retry_schedule=core.RETRY_SCHEDULES[retries],
        save_failed_requests=_flag(_setting(app, "STRIPE_EMULATOR_SAVE_FAILED_REQUESTS", hostile)),
        event_retention=float(retention_days) * core.DAY if str(retention_days).strip() else None,
        foreign_traffic=max(int(_setting(app, "STRIPE_EMULATOR_FOREIGN_TRAFFIC", 2 if hostile else 0)), 0),
        latency=latency.seconds_from_setting(_setting(app, "STRIPE_EMULATOR_LATENCY", "")),
        adaptive_pricing=_adaptive_pricing(_setting(app, "STRIPE_EMULATOR_ADAPTIVE_PRICING", "eur:0.92" if hostile else "")),
    )
    emulator = Emulator(settings, wsgi_transport(app) if settings.deliver_in_process else http_transport)
    app.extensions["stripe_emulator"] = emulator

    for blueprint in (api.bp, pages.bp, deliveries.bp):
        csrf.exempt(blueprint)
        app.register_blueprint(blueprint)
    app.jinja_env.globals["stripe_offline"] = True
    _create_tables(app)

    if _flag(_setting(app, "STRIPE_EMULATOR_WORKER", not app.testing)):
        # Started by the first request, so only serving processes deliver webhooks, never a
        # CLI command such as `flask db upgrade` or `flask stripe sync`.
        @app.before_request
        def _start_worker() -> None:
            if emulator.worker is None:
                emulator.start_worker(app)


def tick(app: Flask, now: float | None = None) -> int:
    """Settle due delayed payments, expire due sessions and send due webhooks, once.

    `now` (Unix seconds) lets tests jump ahead in time. Returns the number of delivery
    attempts made. Runs in its own app context, leaving the caller's session untouched.
    """
    return contextvars.Context().run(_tick, app, time.time() if now is None else now)


def resend(app: Flask, event_id: str, now: float | None = None) -> bool:
    """Deliver an event once more, as the Dashboard's "Resend" button does. False if unknown.

    With Stripe's retry schedule a failed delivery comes back only hours later; this is the
    operator's way to have it now. The next `tick` (at or after `now`) sends it.
    """
    emulator: Emulator = app.extensions["stripe_emulator"]
    at = time.time() if now is None else now
    return contextvars.Context().run(_in_app_context, app, lambda: core.resend(event_id, emulator.settings, at))


def _in_app_context(app: Flask, call: Any) -> Any:
    with app.app_context():
        return call()


def _tick(app: Flask, now: float) -> int:
    emulator: Emulator = app.extensions["stripe_emulator"]
    with app.app_context():
        core.settle_due(emulator.settings, now)
        core.fail_due_refunds(emulator.settings, now)
        core.expire_due(emulator.settings, now)
        core.prune_idempotency_keys(now)
        return core.deliver_due(emulator.settings, emulator.transport, now)


def _create_tables(app: Flask) -> None:
    """Create the emulator's tables if missing; a worker racing us to it is fine."""
    with app.app_context():
        try:
            Base.metadata.create_all(db.engine)
        except DatabaseError:
            Base.metadata.create_all(db.engine)
        _add_missing_columns(db.engine)


def _add_missing_columns(engine: Engine) -> None:
    """Add the newer (nullable) columns to tables an older emulator made, keeping their rows."""
    existing = inspect(engine)
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            assert column.nullable, f"{table.name}.{column.name}: only nullable columns can be added"
            kind = column.type.compile(engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            except DatabaseError:  # another worker added it first
                pass


def _adaptive_pricing(value: Any) -> tuple[str, Decimal] | None:
    """`eur:0.92` → ("eur", Decimal("0.92")); empty → None."""
    value = str(value or "").strip().lower()
    if not value:
        return None
    currency, _, rate = value.partition(":")
    try:
        parsed = Decimal(rate)
    except InvalidOperation:
        parsed = Decimal(0)
    if len(currency) != 3 or not currency.isalpha() or not parsed.is_finite() or parsed <= 0:
        raise ValueError(f"STRIPE_EMULATOR_ADAPTIVE_PRICING must look like eur:0.92 (currency:rate), not {value!r}")
    return currency, parsed


def _setting(app: Flask, key: str, default: Any) -> Any:
    if key in app.config:
        return app.config[key]
    return os.environ.get(key, default)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
