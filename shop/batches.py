"""A transaction's statements in one database round trip.

The checkout writes a handful of small statements, each of which would otherwise wait for
PostgreSQL's answer before the next is sent. Here they travel together in psycopg's pipeline
mode, with the transaction spelled out (BEGIN travels with them), and the caller decides from
the answers whether to keep what they did:

    with batches.transaction() as batch:
        answers = batch.run([(statement, parameters), ...])   # one round trip
        if all is well:
            batch.run([...], commit=True)                      # one more, COMMIT with it
    # left without commit: rolled back

A statement that breaks a constraint raises `ConstraintBroken` with its place in the batch;
with `commit=True` nothing of the transaction is then kept.

`committed_one_after_another` sends several transactions at once, each committed before the
next begins (so the next one's statements see what the previous one committed), in one round
trip. The last of them needs no BEGIN or COMMIT of its own: in pipeline mode everything sent
after the last explicit transaction up to the pipeline's closing Sync is one implicit
transaction, committed at the Sync, or rolled back whole if a statement fails. Statements are
compiled once (`reads.compiled_for_postgresql`) and prepared on the server on their first run
on a connection. Other databases (SQLite, in development and tests) run the same statements
one by one through the ORM session, with the same transactions.

Why on the first run: left to itself, psycopg prepares a statement on its sixth run and
records it as prepared when it queues the PREPARE. In a batch, PostgreSQL skips everything
after a failed statement up to the batch's end, that PREPARE included, and psycopg checks
only a statement's first run: the record would name a statement the server never made, and
the statement's next run would fail ("prepared statement does not exist"). Prepared on its
first run, a statement is checked as it is prepared. ROLLBACK, which follows every batch that
failed, is never prepared, so that it always makes psycopg forget (and the server deallocate)
what was prepared: a second guard (`tests/test_batches.py`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Executable
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .reads import autocommit_connection, compiled_for_postgresql

Step = tuple[Executable, Mapping[str, Any]]


class ConstraintBroken(Exception):
    """The statement at `index` of a batch broke a constraint; the transaction is rolled back."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"statement {index} of the batch: {error}")
        self.index = index
        self.error = error


@dataclass(frozen=True)
class Answer:
    """What one statement returned: its rows (for RETURNING or a SELECT) and how many rows it touched."""

    rows: list[tuple[Any, ...]]
    rowcount: int


class Batch:
    """The open transaction of `transaction()`."""

    def __init__(self, driver: psycopg.Connection | None) -> None:
        self._driver = driver  # None: through the ORM session
        self._begun = False
        self.committed = False

    def run(self, steps: Sequence[Step], commit: bool = False) -> list[Answer]:
        """Run the statements, in order, in this transaction; their answers.

        With `commit`, the COMMIT travels with them: nothing runs between the last statement
        and the commit, so row locks they take are held for no longer than the server needs.
        """
        if self._driver is None:
            answers = []
            for index, (statement, parameters) in enumerate(steps):
                try:
                    answers.append(_through_session(statement, parameters))
                except IntegrityError as exc:
                    raise ConstraintBroken(index, exc) from exc
            if commit:
                db.session.commit()
                self.committed = True
            return answers
        cursors: list[psycopg.Cursor] = []
        try:
            with self._driver.pipeline():
                if not self._begun:
                    self._driver.execute("BEGIN", prepare=True)
                    self._begun = True
                for statement, parameters in steps:
                    cursors.append(_send(self._driver, statement, parameters))
                if commit:
                    self._driver.execute("COMMIT", prepare=True)
        except psycopg.errors.IntegrityError as exc:
            # The statement that failed has no result; those before it have theirs.
            failed = next((index for index, cursor in enumerate(cursors) if cursor.pgresult is None), None)
            if failed is None:
                raise
            raise ConstraintBroken(failed, exc) from exc
        self.committed = commit
        return [_answer_of(cursor) for cursor in cursors]

    def roll_back_unless_committed(self) -> None:
        if self.committed:
            return
        if self._driver is None:
            db.session.rollback()
        elif self._begun:
            self._driver.execute("ROLLBACK", prepare=False)


@contextmanager
def transaction() -> Iterator[Batch]:
    """One transaction whose statements go in one round trip; rolled back unless committed.

    On PostgreSQL it runs on a connection of `shop.driver_pool`, so the ORM session should
    hold no transaction meanwhile (it would keep a second connection, of SQLAlchemy's share).
    """
    if db.engine.dialect.name != "postgresql":
        batch = Batch(None)
        try:
            yield batch
        finally:
            batch.roll_back_unless_committed()
        return
    with autocommit_connection() as driver:  # the transaction is spelled out: BEGIN travels with the batch
        batch = Batch(driver)
        try:
            yield batch
        finally:
            with suppress(psycopg.Error):
                batch.roll_back_unless_committed()


def committed_one_after_another(*transactions: Sequence[Step]) -> list[list[Answer]]:
    """Run each group of statements as a transaction of its own, committed before the next begins.

    On PostgreSQL all of them go in one round trip. An error stops the rest: what was already
    committed stays, and the error is raised.
    """
    if db.engine.dialect.name != "postgresql":
        answers = []
        for steps in transactions:
            answers.append([_through_session(statement, parameters) for statement, parameters in steps])
            db.session.commit()
        return answers
    with autocommit_connection() as driver:
        try:
            with driver.pipeline():
                sent = []
                for steps in transactions[:-1]:
                    driver.execute("BEGIN", prepare=True)
                    sent.append([_send(driver, statement, parameters) for statement, parameters in steps])
                    driver.execute("COMMIT", prepare=True)
                sent.append([_send(driver, statement, parameters) for statement, parameters in transactions[-1]])
            return [[_answer_of(cursor) for cursor in cursors] for cursors in sent]
        except psycopg.Error:
            with suppress(psycopg.Error):
                driver.execute("ROLLBACK", prepare=False)
            raise


def committed(statement: Executable, parameters: Mapping[str, Any]) -> Answer:
    """Run one statement as a transaction of its own, in one round trip (no pipeline needed)."""
    if db.engine.dialect.name != "postgresql":
        answer = _through_session(statement, parameters)
        db.session.commit()
        return answer
    with autocommit_connection() as driver:
        return _answer_of(_send(driver, statement, parameters))


def _send(driver: psycopg.Connection, statement: Executable, parameters: Mapping[str, Any]) -> psycopg.Cursor:
    compiled = compiled_for_postgresql(statement)
    return driver.execute(compiled.sql, compiled.values(parameters), prepare=True)


def _answer_of(cursor: psycopg.Cursor) -> Answer:
    return Answer(rows=cursor.fetchall() if cursor.description else [], rowcount=cursor.rowcount)


def _through_session(statement: Executable, parameters: Mapping[str, Any]) -> Answer:
    result = db.session.connection().execute(statement, parameters)
    return Answer(rows=[tuple(row) for row in result] if result.returns_rows else [], rowcount=result.rowcount)
