"""Placing an order: the order, its items, its client's bounds and its stock in two round trips.

A new order is `pending` and holds its units from the moment it is placed (see `shop.orders`
for what happens to it after). Everything is one transaction, sent as two batches
(`shop.batches`):

1. the client's lock (its concurrent checkouts take turns, so each counts the others), the
   order (a twin submission of the same form finds its checkout token taken), its items, and
   what the client already holds, for the bounds to check;
2. the stock, product by product in one order (no deadlocks), with the COMMIT.

Every checkout takes the same products' rows, so how long each holds them is what limits a
crowd: taken in the last batch, they are held only while the server runs it, never while
the shop waits for an answer. Stock can't go below zero (the products' CHECK constraint): a
product without enough units breaks it, and nothing of the order is kept.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Executable, Integer, String, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import make_transient_to_detached

from . import batches
from .extensions import db
from .models import Order, OrderItem, Product, utcnow
from .orders import CheckoutTokenConflict, OrderStatus, new_public_id, out_of_stock


class SaleProduct(Protocol):
    """A product as the checkout reads it: what an order copies from it."""

    id: int
    slug: str
    name: str
    unit_amount: int


@dataclass(frozen=True)
class CartLine:
    product: SaleProduct
    quantity: int


@dataclass(frozen=True)
class Bounds:
    """A new order's check against what its client already holds (see `shop.reservations`).

    `lock` (PostgreSQL) serializes the client's checkouts; `query` runs in the order's
    transaction once the order is in and before its stock is taken, so concurrent checkouts
    of the same client count each other; `check` reads its rows and raises to undo the order.
    """

    lock: Executable
    query: Executable
    parameters: Callable[[Order], Mapping[str, Any]]
    check: Callable[[Order, list[tuple[Any, ...]]], None]


def _insert_order(dialect_insert: Callable[..., Any]) -> Executable:
    return (
        dialect_insert(Order)
        .values(
            status=OrderStatus.PENDING,
            amount_refunded=0,
            amount_refund_pending=0,
            created_at=bindparam("now"),
            updated_at=bindparam("now"),
            **{column: bindparam("new_" + column) for column in NEW_ORDER_COLUMNS},
        )
        .on_conflict_do_nothing(index_elements=["checkout_token"])  # a twin submission's order holds it
        .returning(Order.id)
    )


NEW_ORDER_COLUMNS = ("public_id", "shopper_id", "client_key", "checkout_token", "currency", "amount_total")
INSERT_ORDER = {"postgresql": _insert_order(postgresql.insert), "sqlite": _insert_order(sqlite.insert)}
INSERT_ITEM = (
    insert(OrderItem)
    .from_select(
        ["order_id", "product_id", "product_name", "quantity", "unit_amount"],
        select(
            Order.id,
            bindparam("item_product_id", type_=Integer),
            bindparam("item_product_name", type_=String),
            bindparam("item_quantity", type_=Integer),
            bindparam("item_unit_amount", type_=Integer),
        ).where(Order.public_id == bindparam("public_id")),
    )
    .returning(OrderItem.id)
)
# Unconditional: the products' CHECK constraint refuses a stock below zero, and fails the
# transaction, so the COMMIT can travel with it.
TAKE_STOCK = (
    update(Product)
    .where(Product.id == bindparam("product_id"))
    .values(stock=Product.stock - bindparam("quantity"))
    .execution_options(synchronize_session=False)
)


def place_order(
    shopper_id: str,
    checkout_token: str,
    lines: Sequence[CartLine],
    currency: str,
    client_key: str | None = None,
    bounds: Bounds | None = None,
) -> tuple[Order, bool]:
    """Create a pending order for the cart, or find the one this checkout token already made.

    Returns the order and whether this call created it; a created order is committed and
    detached, complete in memory (nothing is read back). Prices are copied from the products:
    the browser only ever sends quantities. Raises orders.OutOfStock, or what `bounds` raises,
    having saved nothing.
    """
    now = utcnow()
    order = Order(
        public_id=new_public_id(),
        shopper_id=shopper_id,
        client_key=client_key,
        checkout_token=checkout_token,
        status=OrderStatus.PENDING,
        currency=currency,
        amount_total=sum(line.product.unit_amount * line.quantity for line in lines),
        amount_refunded=0,
        amount_refund_pending=0,
        created_at=now,
        updated_at=now,
        items=[
            OrderItem(
                product_id=line.product.id,
                product_name=line.product.name,
                quantity=line.quantity,
                unit_amount=line.product.unit_amount,
            )
            for line in lines
        ],
    )
    new_order: list[batches.Step] = [
        (INSERT_ORDER[db.engine.dialect.name], {"new_" + name: getattr(order, name) for name in NEW_ORDER_COLUMNS} | {"now": now}),
        *((INSERT_ITEM, {"public_id": order.public_id, "item_product_id": item.product_id, "item_product_name": item.product_name,
                         "item_quantity": item.quantity, "item_unit_amount": item.unit_amount}) for item in order.items),
    ]
    lock: list[batches.Step] = []
    holds: list[batches.Step] = []
    if bounds is not None:
        parameters = bounds.parameters(order)
        holds = [(bounds.query, parameters)]
        if db.engine.dialect.name == "postgresql":  # SQLite serializes every writing transaction already
            lock = [(bounds.lock, parameters)]
    by_product = sorted(lines, key=lambda line: line.product.id)
    take_stock = [(TAKE_STOCK, {"product_id": line.product.id, "quantity": line.quantity}) for line in by_product]
    with batches.transaction() as batch:
        placed, *answers = batch.run([*lock, *new_order, *holds])[len(lock):]
        items, held = answers[:len(order.items)], answers[len(order.items):]
        if placed.rows:
            if bounds is not None:
                bounds.check(order, held[0].rows)
            try:
                batch.run(take_stock, commit=True)
            except batches.ConstraintBroken as broken:
                short = by_product[broken.index].product.id
            else:
                order.id = placed.rows[0][0]
                for item, answer in zip(order.items, items, strict=True):
                    item.id, item.order_id = answer.rows[0][0], order.id
                    make_transient_to_detached(item)
                make_transient_to_detached(order)
                return order, True
    if placed.rows:
        raise out_of_stock(short)
    existing = db.session.scalar(select(Order).where(Order.checkout_token == checkout_token))
    if existing is None:  # the order holding this token is gone: the form can't be used again
        raise CheckoutTokenConflict(checkout_token)
    if existing.shopper_id != shopper_id or {item.product_id: item.quantity for item in existing.items} != {
        line.product.id: line.quantity for line in lines
    }:
        raise CheckoutTokenConflict(existing.public_id)
    return existing, False
