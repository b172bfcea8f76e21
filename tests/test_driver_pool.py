"""The connections kept in autocommit mode for the statements sent straight to psycopg (shop.driver_pool)."""
from __future__ import annotations

import threading
from contextlib import ExitStack

import psycopg
import pytest
from sqlalchemy import event, literal, select, text

from shop import driver_pool, reads
from shop.extensions import db
from tests.conftest import make_app

pytestmark = pytest.mark.postgres_only


@pytest.mark.parametrize(("total", "split"), [(2, (1, 1)), (3, (1, 2)), (7, (2, 5)), (15, (5, 10)), (100, (33, 67))])
def test_the_pool_size_is_split_between_sqlalchemy_and_the_driver(total: int, split: tuple[int, int]) -> None:
    assert driver_pool.shares(total) == split


def test_a_connection_is_lent_in_autocommit_mode_and_kept_for_the_next(app) -> None:
    with app.app_context():
        with reads.autocommit_connection() as first:
            assert first.autocommit
            pid = first.info.backend_pid
            first.execute("CREATE TEMPORARY TABLE left_behind (n int)")  # no transaction stays open
        with reads.autocommit_connection() as second:
            assert second.info.backend_pid == pid
            assert second.execute("SELECT count(*) FROM left_behind").fetchone() == (0,)


def test_a_borrower_waits_while_every_connection_is_lent(database_url: str) -> None:
    app = make_app(database_url, DATABASE_POOL_SIZE="3")  # two for the driver
    got_one = threading.Event()

    def borrow() -> None:
        with app.app_context(), reads.autocommit_connection():
            got_one.set()

    with app.app_context():
        try:
            with ExitStack() as lent:
                for _ in range(2):
                    lent.enter_context(reads.autocommit_connection())
                waiting = threading.Thread(target=borrow)
                waiting.start()
                assert not got_one.wait(0.5), "a third connection was lent beside two"
            assert got_one.wait(5), "the waiting borrower got none once one came back"
            waiting.join()
        finally:
            db.engine.dispose()


def test_a_transaction_left_open_closes_its_connection(app) -> None:
    with app.app_context():
        with pytest.raises(RuntimeError), reads.autocommit_connection() as conn:
            conn.execute("BEGIN")
            pid = conn.info.backend_pid
            raise RuntimeError("the block failed before its ROLLBACK")
        assert conn.closed
        with reads.autocommit_connection() as fresh:
            assert fresh.info.backend_pid != pid
            assert fresh.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_broken_connection_is_dropped_with_the_idle_ones(app) -> None:
    """A database restart breaks every connection: after one failed statement, the next borrower
    gets a new connection, not another broken one."""
    with app.app_context():
        with reads.autocommit_connection() as first, reads.autocommit_connection() as second:
            victims = {first.info.backend_pid, second.info.backend_pid}
        with db.engine.connect() as admin:
            for pid in victims:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(psycopg.OperationalError), reads.autocommit_connection() as broken:
            broken.execute("SELECT 1")
        with reads.autocommit_connection() as fresh:
            assert fresh.execute("SELECT 1").fetchone() == (1,)
            assert fresh.info.backend_pid not in victims


def test_disposing_the_engine_closes_the_idle_connections(app) -> None:
    with app.app_context():
        with reads.autocommit_connection() as conn:
            pass
        assert not conn.closed
        db.engine.dispose()
        assert conn.closed


def test_a_new_connection_goes_through_the_engines_connect_listeners(app) -> None:
    """The dialect's set-up and any tracing (the tests' and the bench's round-trip counts) see it."""
    seen = []
    with app.app_context():
        db.engine.dispose()
        event.listen(db.engine, "connect", lambda dbapi_connection, _record: seen.append(dbapi_connection))
        with reads.autocommit_connection() as conn:
            assert seen[-1] is conn


def test_a_workers_first_statement_may_be_one_sent_straight_to_psycopg(database_url: str) -> None:
    """A new engine's first connection sets its dialect up; the driver's first one must not skip that."""
    app = make_app(database_url, STRIPE_OFFLINE=False, STRIPE_SECRET_KEY="sk_test_unused")  # no emulator tables to make
    with app.app_context():
        try:
            assert db.engine.pool.checkedin() == 0  # not connected yet
            assert [tuple(row) for row in reads.read_rows(select(literal(1)))] == [(1,)]
            with db.engine.connect() as orm:
                assert orm.execute(text("SELECT 2")).scalar() == 2
        finally:
            db.engine.dispose()
