"""What the bench buys and pays with: shoppers (signed session cookies, CSRF tokens and addresses
of their own, or a real browser's cookie through the checkout form), orders written straight
into the database as checkout leaves them, and signed `checkout.session.completed` events."""
from __future__ import annotations

import json
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests
import stripe
from servers import HOST, BenchError

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
QUANTITY_FIELD = re.compile(r'name="(quantity-[a-z0-9-]+)"')
SESSION_COOKIE = re.compile(r"(?:^|[;,]\s*)session=([^;]+)")


def catalogue(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    """(id, name, unit_amount) of the products on sale, in page order."""
    return conn.execute("SELECT id, name, unit_amount FROM products WHERE active ORDER BY position").fetchall()


def insert_orders(
    conn: psycopg.Connection, shopper_id: str, count: int, lines: list[tuple[int, str, int, int]],
    status: str = "awaiting_payment",
) -> list[tuple[str, str, int]]:
    """Orders with their items, as checkout leaves them (a Checkout Session each).

    `lines` are (product id, name, unit amount, quantity). Returns (public_id, session_id, amount).
    """
    now = datetime.now(UTC)
    amount = sum(unit * quantity for _, _, unit, quantity in lines)
    paid_at = now if status == "paid" else None
    rows = []
    for i in range(count):
        public_id = "ord_" + secrets.token_urlsafe(16)
        session_id = "cs_test_bench_" + secrets.token_hex(16)
        created = now - timedelta(seconds=count - i)  # one a second, the newest last, as orders arrive
        rows.append((
            public_id, shopper_id, secrets.token_urlsafe(24), status, "usd", amount, 0,
            session_id, f"http://{HOST}/_stripe/pay/{session_id}", created, created, paid_at,
        ))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE bench_new (public_id text) ON COMMIT DROP")
        with cur.copy(
            "COPY orders (public_id, shopper_id, checkout_token, status, currency, amount_total, amount_refunded,"
            " stripe_session_id, checkout_url, created_at, updated_at, paid_at) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        with cur.copy("COPY bench_new (public_id) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row[0],))
        for product_id, name, unit, quantity in lines:
            cur.execute(
                "INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_amount)"
                " SELECT o.id, %s, %s, %s, %s FROM orders o JOIN bench_new n USING (public_id) ORDER BY o.id",
                (product_id, name, quantity, unit))
    return [(row[0], row[7], amount) for row in rows]


def insert_processed_events(conn: psycopg.Connection, count: int) -> None:
    """Events already applied to paid orders: the history a shop that has been selling keeps."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO stripe_events (id, type, created, order_id, received_at, processed_at, outcome, state)"
            " SELECT 'evt_bench_history_' || o.id, 'checkout.session.completed', extract(epoch FROM now())::int,"
            "  o.id, now(), now(), 'order paid', 'applied'"
            " FROM orders o WHERE o.status = 'paid' AND NOT EXISTS (SELECT 1 FROM stripe_events e WHERE e.order_id = o.id)"
            " ORDER BY o.id LIMIT %s", (count,))


# --------------------------------------------------------------------------- events


def completed_event(public_id: str, session_id: str, amount: int) -> str:
    session = {
        "id": session_id,
        "object": "checkout.session",
        "client_reference_id": public_id,
        "metadata": {"order_id": public_id},
        "amount_total": amount,
        "currency": "usd",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": "pi_bench_" + secrets.token_hex(8),
        "customer_details": {"email": "shopper@example.com"},
    }
    return json.dumps({
        "id": "evt_bench_" + secrets.token_hex(12),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {"object": session},
    })


def sign(body: str, secret: str) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=int(time.time()))


def write_bodies(path: Path, orders: list[tuple[str, str, int]], secret: str) -> None:
    with open(path, "w") as out:
        for public_id, session_id, amount in orders:
            body = completed_event(public_id, session_id, amount)
            out.write(f"{sign(body, secret)}\t{body}\n")


class Browser:
    """A shopper's browser: the signed session cookie, kept by hand.

    Production cookies are `Secure`, which an http:// cookie jar would not send back to
    127.0.0.1; the cookie is what counts, so it is carried as a header (wrk gets it too).
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie = ""

    def _keep(self, answer: requests.Response) -> None:
        match = SESSION_COOKIE.search(answer.headers.get("Set-Cookie", ""))
        if match:
            self.cookie = match[1]

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"session={self.cookie}"} if self.cookie else {}

    def get(self, path: str) -> requests.Response:
        answer = requests.get(self.base + path, headers=self.headers(), allow_redirects=False, timeout=30)
        self._keep(answer)
        return answer

    def post(self, path: str, data: dict[str, str]) -> requests.Response:
        answer = requests.post(self.base + path, data=data, headers=self.headers(), allow_redirects=False, timeout=30)
        self._keep(answer)
        return answer

    def form(self) -> tuple[str, list[str]]:
        page = self.get("/")
        if page.status_code != 200:
            raise BenchError(f"GET / answered {page.status_code}: {page.text[:300]}")
        return CSRF_FIELD.search(page.text)[1], QUANTITY_FIELD.findall(page.text)


def new_checkout_token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, like the form's


def signed_shoppers(secret_key: str, count: int) -> list[tuple[str, str, str, str]]:
    """Many first-time shoppers: (shopper id, session cookie, CSRF token, client address) each.

    Each has the signed session cookie and CSRF token the home page would have given it
    (made here with the shop's SECRET_KEY, as Flask and Flask-WTF sign them), and an
    address of its own for the router's X-Forwarded-For, so a checkout load is many
    shoppers buying once each rather than one browser buying thousands of times.
    """
    from flask import Flask, session
    from flask_wtf.csrf import generate_csrf

    signer = Flask("bench-shoppers")
    signer.config.update(SECRET_KEY=secret_key)
    serializer = signer.session_interface.get_signing_serializer(signer)
    shoppers = []
    for i in range(count):
        with signer.test_request_context():
            shopper_id = secrets.token_urlsafe(24)
            session["shopper_id"] = shopper_id
            csrf = generate_csrf()
            cookie = serializer.dumps(dict(session))
        shoppers.append((shopper_id, cookie, csrf, f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"))
    return shoppers


def write_shoppers(path: Path, secret_key: str, count: int) -> list[str]:
    """`signed_shoppers` for wrk, one "cookie<TAB>csrf<TAB>address" line each; returns their ids."""
    shoppers = signed_shoppers(secret_key, count)
    path.write_text("".join(f"{cookie}\t{csrf}\t{address}\n" for _, cookie, csrf, address in shoppers))
    return [shopper_id for shopper_id, *_ in shoppers]
