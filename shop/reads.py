"""Reads outside a transaction, for the pages that only look.

A read on its own needs no BEGIN and no ROLLBACK: on an autocommit connection it is one
round trip. It also keeps the driver's prepared statements: psycopg 3 forgets them on every
rollback, so a read ended by the ORM session's ROLLBACK would be parsed and planned again
on each request. The statements passed here are built once, at import, so each call only
binds its parameters.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Executable, Row

from .extensions import db


def read_rows(statement: Executable, parameters: Mapping[str, Any] | None = None) -> Sequence[Row]:
    """Run a read-only statement in autocommit mode and return all its rows."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return connection.execute(statement, parameters).all()
