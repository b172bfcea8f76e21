"""Batches broken off by an error leave their connection fit for the next one (shop.batches).

psycopg prepares a statement on the server on its sixth run on a connection, and records it
as prepared when it queues the PREPARE. In pipeline mode PostgreSQL skips everything after a
failed statement up to the batch's end, that PREPARE included, so the record can name a
statement the server never made: the next run of it fails with "prepared statement does not
exist". A flash sale breaks hundreds of checkouts off this way (sold out), on a few pooled
connections.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import bindparam, literal_column, select, update

from shop import batches
from shop.models import Product

pytestmark = pytest.mark.postgres_only

TAKE_STOCK = (
    update(Product)
    .where(Product.slug == bindparam("slug"))
    .values(stock=Product.stock - bindparam("units"))
    .returning(Product.stock)
)
READ_STOCK = select(Product.stock).where(Product.slug == bindparam("slug"))
NOTHING = select(literal_column("1"))
RUNS_BEFORE_PSYCOPG_PREPARES = 5


def _stock(slug: str) -> int:
    return batches.committed(READ_STOCK, {"slug": slug}).rows[0][0]


@pytest.fixture
def product(app) -> Iterator[tuple[str, int]]:
    """A product's slug and stock, on a connection that has rolled back as a busy shop's has.

    Transactions left uncommitted (a checkout over its bounds), until psycopg would prepare
    ROLLBACK by its count, as it did before the batches stopped it: a ROLLBACK it prepared
    no longer made it forget anything.
    """
    with app.app_context():
        slug = Product.query.first().slug
        before = _stock(slug)
        for _ in range(RUNS_BEFORE_PSYCOPG_PREPARES + 1):
            with batches.transaction() as batch:
                batch.run([(READ_STOCK, {"slug": slug})])
        yield slug, before


def test_a_batch_broken_off_at_its_last_statement_leaves_the_next_commit_working(product: tuple[str, int]) -> None:
    """The sold-out checkout: the stock statement breaks the CHECK, and only COMMIT came after it."""
    slug, before = product
    for _ in range(RUNS_BEFORE_PSYCOPG_PREPARES):
        with batches.transaction() as batch:
            batch.run([(TAKE_STOCK, {"slug": slug, "units": 0})], commit=True)
        with pytest.raises(batches.ConstraintBroken), batches.transaction() as batch:
            batch.run([(TAKE_STOCK, {"slug": slug, "units": before + 1})], commit=True)
    with batches.transaction() as batch:
        (taken,) = batch.run([(TAKE_STOCK, {"slug": slug, "units": 1})], commit=True)
    assert taken.rows == [(before - 1,)]
    assert _stock(slug) == before - 1


def test_a_batch_broken_off_before_its_later_statements_leaves_them_working(product: tuple[str, int]) -> None:
    slug, before = product
    for _ in range(RUNS_BEFORE_PSYCOPG_PREPARES):
        with batches.transaction() as batch:
            batch.run([(TAKE_STOCK, {"slug": slug, "units": 0}), (NOTHING, {})], commit=True)
    with pytest.raises(batches.ConstraintBroken) as broken, batches.transaction() as batch:
        batch.run([(TAKE_STOCK, {"slug": slug, "units": before + 1}), (NOTHING, {})], commit=True)
    assert broken.value.index == 0
    with batches.transaction() as batch:
        answers = batch.run([(TAKE_STOCK, {"slug": slug, "units": 1}), (NOTHING, {})], commit=True)
    assert [answer.rows for answer in answers] == [[(before - 1,)], [(1,)]]


def test_transactions_broken_off_one_after_another_leave_the_rest_working(product: tuple[str, int]) -> None:
    slug, before = product
    for _ in range(RUNS_BEFORE_PSYCOPG_PREPARES):
        batches.committed_one_after_another([(TAKE_STOCK, {"slug": slug, "units": 0})], [(NOTHING, {})])
    with pytest.raises(Exception, match="stock_not_negative"):
        batches.committed_one_after_another([(TAKE_STOCK, {"slug": slug, "units": before + 1})], [(NOTHING, {})])
    answers = batches.committed_one_after_another([(TAKE_STOCK, {"slug": slug, "units": 1})], [(NOTHING, {})])
    assert [[answer.rows for answer in answers_of_one] for answers_of_one in answers] == [[[(before - 1,)]], [[(1,)]]]
