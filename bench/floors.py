"""The floors: the least a Flask app must do to answer the shop's read endpoints, its checkout and its webhook.

`bench/run.py` serves this app with the shop's own gunicorn settings, on the shop's
database and with the shop's SECRET_KEY (so the same session cookie works on both), and
reports the shop's rate on each endpoint as a fraction of the floor's.

- `GET /`: the shop's templates (`index.html`, its layout and macros) with the same
  filters, the products (re-read every PRODUCT_CACHE_SECONDS, as the shop does), a CSRF
  token and a fresh checkout token, the browser's session cookie, and its orders with
  their items in one query of the same shape as the shop's.
- `GET /orders/<id>/status`: one primary-key select, the owner check against the session
  cookie, and the same JSON.
- `POST /checkout`: the CSRF check, the quantities from the form, then in one transaction the
  order, its items and the stock (a conditional UPDATE: sold out is a 409 page); the Checkout
  Session created through the stripe SDK (`raw_request`, as the shop: its answer read as JSON)
  with the same parameters, shipping address collection included, and idempotency key (no
  connection held meanwhile), the session recorded on the order, and a 303 to its page.
- `POST /webhooks/stripe`: the Stripe-Signature checked through the stripe SDK against the
  shop's webhook secret, the body parsed, then one statement (its own transaction): record the
  event by its id (a repeat records nothing), pay the order if the event is a paid
  `checkout.session.completed` whose session id, client reference, amount and currency match an
  order awaiting payment (with the payment intent and email, as the shop keeps them), and, for a
  repeat, read what it was recorded as; the same JSON (message and duplicate flag).

Nothing else: no ORM, no pool, no ProxyFix, no security headers, no ETag, no logging, no rate
limits, no bound per client, no one-time form token, no superseding of earlier checkouts; the
webhook checks no event shape, takes no payment lock, keeps no address, holds no refund waiting
for its payment, and answers an event that pays nothing with a plain "no change".
Connections (autocommit, statements prepared once) come from a pool as small as the shop's.
"""
from __future__ import annotations

import json
import os
import queue
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import stripe
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFProtect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shop import filters, status_words  # noqa: E402  (the template's money and date filters, status words)

ORDERS_SHOWN = 20
PRODUCT_CACHE_SECONDS = 2.0
MAX_PER_ORDER = 10
PAID_STATES = ("paid", "partially_refunded", "refunded")

PRODUCTS = (
    "SELECT slug, name, description, image, unit_amount, stock, id FROM products"
    " WHERE active ORDER BY position"
)
NEW_ORDER = (
    "INSERT INTO orders (public_id, shopper_id, checkout_token, status, currency, amount_total, amount_refunded,"
    " created_at, updated_at) VALUES (%s, %s, %s, 'pending', 'usd', %s, 0, %s, %s) RETURNING id"
)
NEW_ITEM = "INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_amount) VALUES (%s, %s, %s, %s, %s)"
RESERVE = "UPDATE products SET stock = stock - %s WHERE id = %s AND stock >= %s"
SESSION_CREATED = (
    "UPDATE orders SET status = 'awaiting_payment', stripe_session_id = %s, checkout_url = %s, updated_at = %s"
    " WHERE id = %s AND status = 'pending'"
)
ORDER_FAILED = "UPDATE orders SET status = 'failed', updated_at = %s WHERE id = %s AND status = 'pending'"
SESSION_LIFETIME = timedelta(minutes=45)  # payable for CHECKOUT_SESSION_MINUTES + STALE_PENDING_MINUTES, as the shop
ORDERS_WITH_ITEMS = (
    "SELECT o.id, o.public_id, o.status, o.currency, o.amount_total, o.amount_refunded, o.amount_refund_pending,"
    " o.created_at, o.paid_at, o.checkout_url, o.superseded_at, o.stripe_session_id,"
    " i.product_name, i.quantity, i.unit_amount"
    " FROM orders o JOIN order_items i ON i.order_id = o.id"
    " WHERE o.id IN (SELECT id FROM orders WHERE shopper_id = %s ORDER BY created_at DESC, id DESC LIMIT %s)"
    " ORDER BY o.created_at DESC, o.id DESC, i.id"
)
STATUS = (
    "SELECT id, shopper_id, stripe_session_id, status, updated_at, paid_at, amount_total, currency"
    " FROM orders WHERE public_id = %s"
)
# One statement: pay the matching order, record the event (ON CONFLICT: a repeat records
# nothing), and answer (outcome, duplicate): the new row's, or for a repeat the stored one's.
RECORD_AND_PAY = (
    "WITH paid AS ("
    " UPDATE orders SET status = 'paid', paid_at = %(now)s, updated_at = %(now)s,"
    "  payment_intent_id = %(payment_intent)s, customer_email = %(email)s"
    " WHERE %(payable)s AND stripe_session_id = %(session_id)s AND public_id = %(reference)s"
    "  AND amount_total = %(amount)s AND currency = %(currency)s AND status = 'awaiting_payment'"
    " RETURNING id),"
    " recorded AS ("
    " INSERT INTO stripe_events (id, type, created, order_id, received_at, processed_at, outcome, state, failures)"
    " SELECT %(event_id)s, %(type)s, %(created)s, paid.id, %(now)s, %(now)s,"
    "  CASE WHEN paid.id IS NULL THEN 'no change' ELSE 'order paid' END,"
    "  CASE WHEN paid.id IS NULL THEN 'not_ours' ELSE 'applied' END, 0"
    " FROM (SELECT) AS one LEFT JOIN paid ON true"
    " ON CONFLICT (id) DO NOTHING RETURNING outcome)"
    " SELECT outcome, false FROM recorded"
    " UNION ALL SELECT outcome, true FROM stripe_events WHERE id = %(event_id)s AND NOT EXISTS (SELECT FROM recorded)"
)
# A repeat that arrived while its first delivery was still being recorded (not in the statement's snapshot).
RECORDED_OUTCOME = "SELECT outcome FROM stripe_events WHERE id = %s"


@dataclass(frozen=True)
class Product:
    slug: str
    name: str
    description: str
    image: str
    unit_amount: int
    stock: int
    id: int

    @property
    def max_quantity(self) -> int:
        return max(0, min(self.stock, 10))


@dataclass(frozen=True)
class Line:
    product_name: str
    quantity: int
    unit_amount: int

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_amount


@dataclass(frozen=True)
class Order:
    public_id: str
    status: str
    currency: str
    amount_total: int
    amount_refunded: int
    amount_refund_pending: int
    created_at: datetime
    paid_at: datetime | None
    items: list[Line] = field(default_factory=list)
    resume_url: str | None = None
    stripe_session_id: str | None = None


_local = threading.local()  # each thread's stripe client
_products: dict[str, object] = {"until": 0.0, "rows": []}


class Pool:
    """Autocommit connections, each kept open with its prepared statements, lent one request at a
    time: at most `size` at rest and `size + overflow` at once, as the shop's SQLAlchemy pool."""

    def __init__(self, size: int = 15, overflow: int = 0) -> None:
        self.idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self.size = size
        self.slots = threading.BoundedSemaphore(size + overflow)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        self.slots.acquire()
        try:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
                conn = psycopg.connect(url, autocommit=True, prepare_threshold=0)
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            if self.idle.qsize() < self.size:
                self.idle.put(conn)
            else:
                conn.close()
        finally:
            self.slots.release()


pool = Pool()


def products() -> list[Product]:
    now = time.monotonic()
    if _products["until"] <= now:
        with pool.connection() as conn:
            _products["rows"] = [Product(*row) for row in conn.execute(PRODUCTS)]
        _products["until"] = now + PRODUCT_CACHE_SECONDS
    return _products["rows"]  # type: ignore[return-value]


def orders_of(shopper_id: str) -> list[Order]:
    payable_since = datetime.now(UTC) - SESSION_LIFETIME
    orders: dict[int, Order] = {}
    with pool.connection() as conn:
        rows = conn.execute(ORDERS_WITH_ITEMS, (shopper_id, ORDERS_SHOWN)).fetchall()
    for row in rows:
        order = orders.get(row[0])
        if order is None:
            payable = row[2] == "awaiting_payment" and row[10] is None and row[7] > payable_since
            order = orders[row[0]] = Order(*row[1:9], resume_url=row[9] if payable else None, stripe_session_id=row[11])
        order.items.append(Line(*row[12:]))
    return list(orders.values())


catalog = Blueprint("catalog", __name__)
checkout = Blueprint("checkout", __name__)
webhooks = Blueprint("webhooks", __name__)


@catalog.get("/")
def index():
    shopper_id = session.get("shopper_id")
    if shopper_id is None:
        shopper_id = session["shopper_id"] = secrets.token_urlsafe(24)
        session.permanent = True
    response = make_response(render_template(
        "index.html", products=products(), orders=orders_of(shopper_id), currency="usd", locale="en-US",
        max_per_order=MAX_PER_ORDER, checkout_token=secrets.token_urlsafe(24),
    ))
    response.headers["Cache-Control"] = "no-store"
    return response


class SoldOut(Exception):
    """A product of the cart has fewer units left than asked for."""


def stripe_client() -> stripe.StripeClient:
    client = getattr(_local, "stripe", None)
    if client is None:
        client = _local.stripe = stripe.StripeClient(
            "sk_test_bench", base_addresses={"api": os.environ["STRIPE_API_BASE"]}, max_network_retries=2)
    return client


def error_page(status: int, title: str, message: str):
    return render_template("error.html", title=title, message=message), status


@checkout.post("/checkout")
def create():
    shopper_id = session.get("shopper_id") or secrets.token_urlsafe(24)
    session["shopper_id"] = shopper_id
    by_field = {f"quantity-{product.slug}": product for product in products()}
    lines = []
    for name, value in request.form.items():
        if name in ("csrf_token", "checkout_token"):
            continue
        product = by_field.get(name)
        if product is None or not value.isdigit() or int(value) > MAX_PER_ORDER:
            return error_page(400, "We couldn't start your checkout", "Quantities must be whole numbers from 0 to 10.")
        if int(value):
            lines.append((product, int(value)))
    if not lines:
        return error_page(400, "We couldn't start your checkout", "Choose at least one item before checking out.")
    now = datetime.now(UTC)
    public_id = "ord_" + secrets.token_urlsafe(16)
    with pool.connection() as conn, conn.transaction():
        (order_id,) = conn.execute(NEW_ORDER, (
            public_id, shopper_id, request.form.get("checkout_token", ""),
            sum(product.unit_amount * quantity for product, quantity in lines), now, now)).fetchone()
        for product, quantity in sorted(lines, key=lambda line: line[0].id):
            conn.execute(NEW_ITEM, (order_id, product.id, product.name, quantity, product.unit_amount))
            if not conn.execute(RESERVE, (quantity, product.id, quantity)).rowcount:
                raise SoldOut(product.name)
    try:
        created = stripe_client().raw_request("post", "/v1/checkout/sessions", **{
            "mode": "payment",
            "line_items": [{"price_data": {"currency": "usd", "unit_amount": product.unit_amount,
                                           "product_data": {"name": product.name}}, "quantity": quantity}
                           for product, quantity in lines],
            "client_reference_id": public_id,
            "metadata": {"order_id": public_id},
            "expires_at": int((now + SESSION_LIFETIME).timestamp()),
            "success_url": url_for("checkout.create", _external=True) + "?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": url_for("catalog.index", _external=True),
            "shipping_address_collection": {"allowed_countries": ["US", "CA"]},
        }, idempotency_key=f"checkout-session-{public_id}").data
    except stripe.StripeError:
        with pool.connection() as conn:
            conn.execute(ORDER_FAILED, (datetime.now(UTC), order_id))
        return error_page(503, "Payment is unavailable right now", "Nothing was charged. Please try again in a moment.")
    with pool.connection() as conn:
        conn.execute(SESSION_CREATED, (created["id"], created["url"], datetime.now(UTC), order_id))
    return redirect(created["url"], code=303)


@checkout.errorhandler(SoldOut)
def sold_out(exc: SoldOut):
    message = f"Sorry, {exc} is sold out. Nothing was charged. Please adjust your order and try again."
    return error_page(409, "Not enough stock", message)


@checkout.get("/orders/<public_id>/status")
def status(public_id: str):
    with pool.connection() as conn:
        row = conn.execute(STATUS, (public_id,)).fetchone()
    if row is None or row[1] != session.get("shopper_id"):
        abort(404)
    return jsonify(
        status=row[3], paid=row[3] in PAID_STATES, paid_at=filters.isodate(row[5]) if row[5] else None,
        amount_total=row[6], currency=row[7],
    )


@webhooks.post("/webhooks/stripe")
def stripe_webhook():
    payload = request.get_data(as_text=True)
    try:
        stripe.WebhookSignature.verify_header(payload, request.headers.get("Stripe-Signature", ""),
                                              current_app.config["STRIPE_WEBHOOK_SECRET"])
        event = json.loads(payload)
        checkout_session = event["data"]["object"]
        parameters = {
            "event_id": event["id"], "type": event["type"], "created": event["created"], "now": datetime.now(UTC),
            "payable": event["type"] == "checkout.session.completed" and checkout_session["payment_status"] == "paid",
            "session_id": checkout_session["id"], "reference": checkout_session["client_reference_id"],
            "amount": checkout_session["amount_total"], "currency": checkout_session["currency"],
            "payment_intent": checkout_session["payment_intent"],
            "email": (checkout_session.get("customer_details") or {}).get("email"),
        }
    except stripe.SignatureVerificationError:
        return jsonify(message="Invalid or expired Stripe-Signature."), 400
    except (ValueError, LookupError, TypeError, AttributeError):
        return jsonify(message="Invalid event."), 400
    with pool.connection() as conn:
        row = conn.execute(RECORD_AND_PAY, parameters).fetchone()
        if row is None:
            row = (conn.execute(RECORDED_OUTCOME, (parameters["event_id"],)).fetchone()[0], True)
    outcome, duplicate = row
    return jsonify(message=outcome, duplicate=duplicate), 200


def create_app() -> Flask:
    app = Flask(__name__, template_folder=str(ROOT / "shop" / "templates"), static_folder=str(ROOT / "shop" / "static"))
    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], WTF_CSRF_TIME_LIMIT=None, SESSION_REFRESH_EACH_REQUEST=False,
                      SHOP_LOCALE="en_US", STRIPE_WEBHOOK_SECRET=os.environ["STRIPE_WEBHOOK_SECRET"])
    csrf = CSRFProtect(app)
    csrf.exempt(webhooks)
    filters.init_app(app)
    status_words.init_app(app)
    app.register_blueprint(catalog)
    app.register_blueprint(checkout)
    app.register_blueprint(webhooks)
    return app


app = create_app()
