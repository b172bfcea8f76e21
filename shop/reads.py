"""Reads outside a transaction, for the pages that only look.

A read on its own needs no BEGIN and no ROLLBACK: on an autocommit connection it is one
round trip. It also keeps the driver's prepared statements: psycopg 3 forgets them on every
rollback, so a read ended by the ORM session's ROLLBACK would be parsed and planned again
on each request.

On PostgreSQL the statement, compiled once, goes straight to psycopg on a pooled
connection: SQLAlchemy's per-execution work (cache key, execution context, result
processing) cost more than the query itself on the status poll. The rows are named
tuples, read like SQLAlchemy's rows. Other databases (SQLite, in development and tests)
run the same statement through SQLAlchemy.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Executable
from sqlalchemy.engine import Compiled

from .extensions import db


def read_rows(statement: Executable, parameters: Mapping[str, Any] | None = None) -> Sequence[Any]:
    """Run a read-only statement in autocommit mode; its rows, with columns as attributes."""
    engine = db.engine
    if engine.dialect.name != "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(statement, parameters).all()
    compiled = compiled_for_postgresql(statement)
    with autocommit_connection() as driver, driver.cursor(row_factory=namedtuple_row) as cursor:
        return cursor.execute(str(compiled), compiled.construct_params(parameters)).fetchall()


@contextmanager
def autocommit_connection() -> Iterator[psycopg.Connection]:
    """A pooled PostgreSQL connection's psycopg connection, in autocommit mode until it goes back.

    The pool's connection itself, with no SQLAlchemy Connection around it (that costs more
    than a short statement). The caller spells out any transaction it needs.
    """
    pooled = db.engine.raw_connection()
    try:
        driver = pooled.driver_connection
        driver.autocommit = True
        try:
            yield driver
        finally:
            with suppress(psycopg.Error):
                driver.autocommit = False
    finally:
        pooled.close()


_COMPILED: dict[int, tuple[Executable, Compiled]] = {}


def compiled_for_postgresql(statement: Executable) -> Compiled:
    """The statement compiled for PostgreSQL, once per statement (statements built at import)."""
    cached = _COMPILED.get(id(statement))
    if cached is None or cached[0] is not statement:
        cached = _COMPILED[id(statement)] = (statement, statement.compile(dialect=db.engine.dialect))
    return cached[1]
