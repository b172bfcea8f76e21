"""The floors: the least a Flask app must do to answer the shop's two read endpoints.

`bench/run.py` serves this app with the shop's own gunicorn settings, on the shop's
database and with the shop's SECRET_KEY (so the same session cookie works on both), and
reports the shop's rate on each endpoint as a fraction of the floor's.

- `GET /`: the shop's templates (`index.html`, its layout and macros) with the same
  filters, the products (re-read every PRODUCT_CACHE_SECONDS, as the shop does), a CSRF
  token and a fresh checkout token, the browser's session cookie, and its orders with
  their items in one query of the same shape as the shop's.
- `GET /orders/<id>/status`: one primary-key select, the owner check against the session
  cookie, and the same JSON.

Nothing else: no ORM, no pool, no ProxyFix, no security headers, no ETag, no logging.
Each thread keeps one autocommit psycopg connection whose statements are prepared once.
"""
from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from flask import Blueprint, Flask, abort, jsonify, make_response, render_template, session
from flask_wtf.csrf import CSRFProtect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shop import filters  # noqa: E402  (the template's money and date filters)

ORDERS_SHOWN = 20
PRODUCT_CACHE_SECONDS = 2.0
CHECKOUT_SESSION_MINUTES = 30
MAX_PER_ORDER = 10
PAID_STATES = ("paid", "partially_refunded", "refunded")

PRODUCTS = (
    "SELECT slug, name, description, image, unit_amount, stock FROM products"
    " WHERE active ORDER BY position"
)
ORDERS_WITH_ITEMS = (
    "SELECT o.id, o.public_id, o.status, o.currency, o.amount_total, o.amount_refunded, o.created_at, o.paid_at,"
    " o.checkout_url, i.product_name, i.quantity, i.unit_amount"
    " FROM orders o JOIN order_items i ON i.order_id = o.id"
    " WHERE o.id IN (SELECT id FROM orders WHERE shopper_id = %s ORDER BY created_at DESC, id DESC LIMIT %s)"
    " ORDER BY o.created_at DESC, o.id DESC, i.id"
)
STATUS = (
    "SELECT id, shopper_id, stripe_session_id, status, updated_at, paid_at, amount_total, currency"
    " FROM orders WHERE public_id = %s"
)


@dataclass(frozen=True)
class Product:
    slug: str
    name: str
    description: str
    image: str
    unit_amount: int
    stock: int

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
    created_at: datetime
    paid_at: datetime | None
    items: list[Line] = field(default_factory=list)
    resume_url: str | None = None


_local = threading.local()
_products: dict[str, object] = {"until": 0.0, "rows": []}


def connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        conn = _local.conn = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    return conn


def products() -> list[Product]:
    now = time.monotonic()
    if _products["until"] <= now:
        _products["rows"] = [Product(*row) for row in connection().execute(PRODUCTS)]
        _products["until"] = now + PRODUCT_CACHE_SECONDS
    return _products["rows"]  # type: ignore[return-value]


def orders_of(shopper_id: str) -> list[Order]:
    payable_since = datetime.now(UTC) - timedelta(minutes=CHECKOUT_SESSION_MINUTES)
    orders: dict[int, Order] = {}
    for row in connection().execute(ORDERS_WITH_ITEMS, (shopper_id, ORDERS_SHOWN)):
        order = orders.get(row[0])
        if order is None:
            payable = row[2] == "awaiting_payment" and row[6] > payable_since
            order = orders[row[0]] = Order(*row[1:8], resume_url=row[8] if payable else None)
        order.items.append(Line(*row[9:]))
    return list(orders.values())


catalog = Blueprint("catalog", __name__)
checkout = Blueprint("checkout", __name__)


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


@checkout.post("/checkout")
def create():  # only named, for url_for in the template
    abort(405)


@checkout.get("/orders/<public_id>/status")
def status(public_id: str):
    row = connection().execute(STATUS, (public_id,)).fetchone()
    if row is None or row[1] != session.get("shopper_id"):
        abort(404)
    return jsonify(
        status=row[3], paid=row[3] in PAID_STATES, paid_at=filters.isodate(row[5]) if row[5] else None,
        amount_total=row[6], currency=row[7],
    )


def create_app() -> Flask:
    app = Flask(__name__, template_folder=str(ROOT / "shop" / "templates"), static_folder=str(ROOT / "shop" / "static"))
    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], WTF_CSRF_TIME_LIMIT=None, SESSION_REFRESH_EACH_REQUEST=False,
                      SHOP_LOCALE="en_US")
    CSRFProtect(app)
    filters.init_app(app)
    app.register_blueprint(catalog)
    app.register_blueprint(checkout)
    return app


app = create_app()
