"""Rate-limit counts in a worker's memory, swept for expired entries every few seconds.

Without Redis (or while it is down) the checkout's limits are counted by limits'
`MemoryStorage`. That storage starts a sweep over every key it holds 10 ms after any count
that finds no sweep running, so under steady traffic a worker sweeps all the time. Each
checkout adds four keys (per address and per browser, a minute and an hour), kept for the
hour: with the few thousand shoppers of a launch, a sweep took tens of milliseconds, run a
hundred times a second, on the thread the checkouts wait for (the GIL).

A count never relies on the sweep: every read compares each entry's time with its window.
The sweep only gives memory back, so here it runs at most once every `SWEEP_SECONDS`.
"""
from __future__ import annotations

import threading
import time

from limits.storage import MemoryStorage

SWEEP_SECONDS = 5.0
SCHEME = "shop-memory"


class SweptMemoryStorage(MemoryStorage):
    """limits' in-memory storage, its expired entries swept at most every `SWEEP_SECONDS`."""

    STORAGE_SCHEME = [SCHEME]  # registers "shop-memory://" with limits

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    # MemoryStorage calls this (its private `__schedule_expiry`) on every count.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + SWEEP_SECONDS
            self.timer = threading.Timer(0.0, self._MemoryStorage__expire_events)
            self.timer.daemon = True
            self.timer.start()
        finally:
            self._sweep_lock.release()
