"""The committed migrations: they build exactly the models' schema, and leave the catalogue."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import Product, managed_by_migrations
from tests.conftest import fresh_postgres_database, make_app


@pytest.fixture
def empty_database_url(database_url: str, tmp_path) -> Iterator[str]:
    """A database nothing has touched, on the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    with fresh_postgres_database("shop_migrations") as url:
        yield url.render_as_string(hide_password=False)


def test_upgrade_on_an_empty_database_leaves_the_three_products(empty_database_url):
    app = make_app(empty_database_url)
    with app.app_context():
        upgrade()
        products = db.session.execute(select(Product.name, Product.unit_amount, Product.stock).order_by(Product.position)).all()
        db.session.remove()
        db.engine.dispose()
    assert [tuple(p) for p in products] == [
        ("Field Notebook", 1800, 100),
        ("Enamel Mug", 2400, 100),
        ("Canvas Tote", 3200, 100),
    ]


def test_migrations_match_the_models(database_url):
    app = make_app(database_url)
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": managed_by_migrations})
        differences = compare_metadata(context, db.metadata)
    with app.app_context():
        db.engine.dispose()
    assert differences == []


def test_downgrade_removes_everything_and_upgrade_restores_it(database_url):
    app = make_app(database_url)
    with app.app_context():
        downgrade(revision="base")
        upgrade()
        assert db.session.scalar(select(func.count()).select_from(Product)) == 3
        db.session.remove()
        db.engine.dispose()
