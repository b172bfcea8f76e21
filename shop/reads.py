"""Reads outside a transaction, for the pages that only look.

A read on its own needs no BEGIN and no ROLLBACK: on an autocommit connection it is one
round trip. It also keeps the driver's prepared statements: psycopg 3 forgets them on every
rollback, so a read ended by the ORM session's ROLLBACK would be parsed and planned again
on each request.

On PostgreSQL the statement, compiled once, goes straight to psycopg on a pooled
connection: SQLAlchemy's per-execution work (cache key, execution context, result
processing) cost more than the query itself on the status poll. The values the statement
carries itself (its literals) are collected once too, so a run only adds the caller's.
The rows are named tuples, read like SQLAlchemy's rows. Other databases (SQLite, in
development and tests) run the same statement through SQLAlchemy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Executable

from . import driver_pool
from .extensions import db


def read_rows(statement: Executable, parameters: Mapping[str, Any] | None = None) -> Sequence[Any]:
    """Run a read-only statement in autocommit mode; its rows, with columns as attributes."""
    engine = db.engine
    if engine.dialect.name != "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(statement, parameters).all()
    compiled = compiled_for_postgresql(statement)
    with autocommit_connection() as driver, driver.cursor(row_factory=namedtuple_row) as cursor:
        return cursor.execute(compiled.sql, compiled.values(parameters)).fetchall()


def autocommit_connection() -> AbstractContextManager[psycopg.Connection]:
    """A PostgreSQL connection in autocommit mode, for a block (`shop.driver_pool`).

    psycopg's own connection, with no SQLAlchemy Connection around it (that costs more
    than a short statement). The caller spells out any transaction it needs.
    """
    return driver_pool.of(db.engine).connection()


@dataclass(frozen=True)
class CompiledStatement:
    """A statement's PostgreSQL text (psycopg's `%(name)s` placeholders) and the values it carries itself."""

    sql: str
    fixed: dict[str, Any]

    def values(self, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every placeholder's value: the statement's own, then the caller's (which win, as in SQLAlchemy)."""
        return {**self.fixed, **parameters} if parameters else self.fixed


_COMPILED: dict[int, tuple[Executable, CompiledStatement]] = {}


def compiled_for_postgresql(statement: Executable) -> CompiledStatement:
    """The statement compiled for PostgreSQL, once per statement (statements built at import).

    What SQLAlchemy's `construct_params` would add on every run is collected here once: the
    values of the statement's literals. Its other parameters are the caller's to give (psycopg
    refuses a run that leaves one out). Statements whose parameters SQLAlchemy computes per
    run (a callable value, an expanding IN list, a value rendered into the text) or renames
    are not taken.
    """
    cached = _COMPILED.get(id(statement))
    if cached is None or cached[0] is not statement:
        compiled = statement.compile(dialect=db.engine.dialect)
        binds = list(compiled.binds.values())
        if compiled.escaped_bind_names or any(bind.callable or bind.expanding or bind.literal_execute for bind in binds):
            raise ValueError(f"not a statement for the driver: {compiled}")
        fixed = {compiled.bind_names[bind]: bind.value for bind in binds if not bind.required}
        cached = _COMPILED[id(statement)] = (statement, CompiledStatement(str(compiled), fixed))
    return cached[1]
