"""Redis can't slow checkout: a real TCP proxy in front of Redis delays (or swallows) every request.

Before the short timeouts and the circuit, a Redis answering in 0.4 s (under the old 0.5 s
timeout) cost each checkout one slow round trip per limit, and redis-py's retries stretched a
hanging one to seconds.
"""
from __future__ import annotations

import gc
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from config import Config
from tests.test_limits import Browser, limited_app


@contextmanager
def slow_proxy(redis_url: str, delay: float) -> Iterator[str]:
    """A TCP proxy to Redis that holds each request `delay` seconds (forever, if None); its redis:// URL."""
    target = urlsplit(redis_url)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket, hold: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if hold:
                    if delay is None:
                        stop.wait()
                        return
                    time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((target.hostname, target.port or 6379))
            threading.Thread(target=pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client, False), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}{target.path or '/0'}"
    finally:
        stop.set()
        listener.close()


@contextmanager
def no_garbage_collection() -> Iterator[None]:
    """Keep the collector out of the timings: late in the whole suite a full collection of its
    process takes about 0.4 s (840k objects), as long as the slow Redis's answer."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def checkout_times(app, count: int) -> list[float]:
    times = []
    with no_garbage_collection():
        for n in range(count):
            browser = Browser(app, f"203.0.113.{n + 1}")
            fields = browser.form_fields()
            started = time.perf_counter()
            assert browser.checkout({"enamel-mug": 1}, fields=fields).status_code == 303
            times.append(time.perf_counter() - started)
    return times


@pytest.mark.sqlite_only
@pytest.mark.parametrize("delay", [0.4, None], ids=["answers-in-0.4s", "hangs"])
def test_a_slow_or_hanging_redis_adds_at_most_one_short_timeout_to_a_checkout(
    database_url: str, redis_url: str, redis_key_prefix: str, delay: float | None, capsys: pytest.CaptureFixture[str]
) -> None:
    production_timeout = Config.REDIS_TIMEOUT_MS
    with limited_app(database_url, redis_url, redis_key_prefix, REDIS_TIMEOUT_MS=production_timeout) as app:
        fast = checkout_times(app, 8)
    with slow_proxy(redis_url, delay) as slow_url, limited_app(
        database_url, slow_url, redis_key_prefix, REDIS_TIMEOUT_MS=production_timeout
    ) as app:
        capsys.readouterr()
        slow = checkout_times(app, 8)
        log = capsys.readouterr().out
    added = [took - statistics.median(fast) for took in slow]
    assert max(added) < 0.25, (fast, slow)  # one 50 ms timeout, not a 0.4 s answer per limit
    assert statistics.median(added) < 0.05, (fast, slow)  # the circuit is open: Redis isn't asked
    assert "Rate limit storage unreachable - falling back to in-memory storage" in log
