"""PostgreSQL connections kept in autocommit mode, for the statements that go straight to psycopg.

`reads` and `batches` send compiled statements to psycopg, outside SQLAlchemy. Borrowing
SQLAlchemy's pooled connection for that cost more than the status poll's own query: the
pool's checkout and checkin, and switching the connection to autocommit and back. These
connections are opened in autocommit mode and stay in it (a batch spells out its BEGIN and
COMMIT), and are lent last-in first-out, so a quiet shop keeps using the few it has.

Each worker's connections are split: `DATABASE_POOL_SIZE` is the most it opens in all,
`shares` divides them between this pool and SQLAlchemy's (the ORM's transactions). Neither
pings before lending: a connection older than the recycle age is replaced when it is next
lent, and one found broken is dropped with every idle one beside it (a database restart
breaks them all), so a restart costs about one failed request per worker, as with
SQLAlchemy's pool. A new connection goes through the engine's "connect" listeners (the
dialect's set-up, and any tracing), and `Engine.dispose()` closes the idle ones.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
from flask import current_app
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event

# The ORM's part of DATABASE_POOL_SIZE: its transactions are the checkout's and the general
# intake's few statements, and the admin pages'; every hot read and write takes this pool.
ORM_SHARE = 1 / 3


def shares(total: int) -> tuple[int, int]:
    """DATABASE_POOL_SIZE split into (SQLAlchemy's pool, this pool); each at least one."""
    orm = min(total - 1, max(1, round(total * ORM_SHARE)))
    return orm, total - orm


class DriverPool:
    """At most `size` autocommit connections to the engine's database, lent one at a time."""

    def __init__(self, engine: Engine, size: int, recycle_seconds: float) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args = (args, kwargs | {"autocommit": True})
        self._engine = weakref.ref(engine)
        self._recycle_seconds = recycle_seconds
        self._idle: deque[tuple[psycopg.Connection, float]] = deque()
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()  # one per connection that may be lent
        for _ in range(size):
            self._slots.put(None)
        self._pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in autocommit mode, for the duration of the block; waits while all are lent."""
        self._slots.get()
        try:
            conn, opened = self._take()
            try:
                yield conn
            finally:
                if conn.broken or conn.closed:
                    self.close_idle()
                elif conn.info.transaction_status == TransactionStatus.IDLE:
                    self._idle.append((conn, opened))
                else:  # left inside a transaction (the block failed before its ROLLBACK)
                    conn.close()
        finally:
            self._slots.put(None)

    def close_idle(self) -> None:
        """Close every connection not lent now; those lent are kept until they come back."""
        while self._idle:
            with suppress(IndexError, psycopg.Error):
                self._idle.pop()[0].close()

    def _take(self) -> tuple[psycopg.Connection, float]:
        if self._pid != os.getpid():  # a forked worker: the parent's sockets are not ours to use
            self._idle.clear()
            self._pid = os.getpid()
        now = time.monotonic()
        while self._idle:
            try:
                conn, opened = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            if now - opened < self._recycle_seconds:
                return conn, opened
            with suppress(psycopg.Error):
                conn.close()
        args, kwargs = self._connect_args
        conn = psycopg.connect(*args, **kwargs)
        engine = self._engine()
        if engine is not None:  # set up as the engine's own are: the dialect's and every "connect" listener
            engine.pool.dispatch.connect(conn, None)
        return conn, now


_POOLS: weakref.WeakKeyDictionary[Engine, DriverPool] = weakref.WeakKeyDictionary()
_MAKING = threading.Lock()


def of(engine: Engine) -> DriverPool:
    """The engine's driver pool, made on first use from the app's config; closed by `engine.dispose()`."""
    pool = _POOLS.get(engine)
    if pool is None:
        with _MAKING:
            pool = _POOLS.get(engine)
            if pool is None:
                config = current_app.config
                size = shares(int(config["DATABASE_POOL_SIZE"]))[1]
                recycle = float(config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_recycle", -1))
                # The engine's first connection initializes its dialect (a "connect" listener that
                # runs once, and needs SQLAlchemy's own connection): made here if not yet. Once
                # it has been, nothing here waits for SQLAlchemy's share, however busy it is.
                if engine.dialect.server_version_info is None:
                    engine.raw_connection().close()
                pool = _POOLS[engine] = DriverPool(engine, size, recycle if recycle > 0 else float("inf"))
                event.listen(engine, "engine_disposed", lambda _engine: pool.close_idle())
    return pool
