"""Placing an order: the order, its items, its stock and its client's bounds in one round trip.

A new order is `pending` and holds its units from the moment it is placed (see `shop.orders`
for what happens to it after). Everything is one transaction, sent as one batch
(`shop.batches`): the order first (a twin submission of the same form finds its checkout
token taken), the stock last, each product's row locked from its conditional UPDATE to the
commit, in one order of products (no deadlocks); the client's bounds are read after that, so
concurrent checkouts of the same products count each other.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Executable, Integer, String, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import make_transient_to_detached

from . import batches, orders
from .extensions import db
from .models import Order, OrderItem, utcnow
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

    `query` runs in the order's transaction after its stock is reserved, while the products'
    rows are locked, so concurrent checkouts of the same products count each other; `check`
    reads its rows and raises to undo the order and its reservation.
    """

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
    by_product = sorted(lines, key=lambda line: line.product.id)
    steps: list[batches.Step] = [
        (INSERT_ORDER[db.engine.dialect.name], {"new_" + name: getattr(order, name) for name in NEW_ORDER_COLUMNS} | {"now": now}),
        *((INSERT_ITEM, {"public_id": order.public_id, "item_product_id": item.product_id, "item_product_name": item.product_name,
                         "item_quantity": item.quantity, "item_unit_amount": item.unit_amount}) for item in order.items),
        *((orders.RESERVE_STOCK, {"product_id": line.product.id, "quantity": line.quantity}) for line in by_product),
    ]
    if bounds is not None:
        steps.append((bounds.query, bounds.parameters(order)))
    with batches.transaction() as batch:
        placed, *answers = batch.run(steps)
        items, reserved = answers[:len(order.items)], answers[len(order.items):len(order.items) + len(by_product)]
        short = next((line for line, answer in zip(by_product, reserved, strict=True) if not answer.rowcount), None)
        if placed.rows and short is None:
            if bounds is not None:
                bounds.check(order, answers[-1].rows)
            batch.commit()
            order.id = placed.rows[0][0]
            for item, answer in zip(order.items, items, strict=True):
                item.id, item.order_id = answer.rows[0][0], order.id
                make_transient_to_detached(item)
            make_transient_to_detached(order)
            return order, True
    if placed.rows:
        raise out_of_stock(short.product.id)
    existing = db.session.scalar(select(Order).where(Order.checkout_token == checkout_token))
    if existing is None:  # the order holding this token is gone: the form can't be used again
        raise CheckoutTokenConflict(checkout_token)
    if existing.shopper_id != shopper_id or {item.product_id: item.quantity for item in existing.items} != {
        line.product.id: line.quantity for line in lines
    }:
        raise CheckoutTokenConflict(existing.public_id)
    return existing, False
