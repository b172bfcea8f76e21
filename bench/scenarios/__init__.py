"""The bench's scenarios, one module each, every one a `run(ctx)` that loads the servers, checks
the database and keeps what it measured in `ctx` (see bench/run.py, which runs them in order)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import psycopg
from load import Runner
from servers import Stack


@dataclass
class Context:
    opts: argparse.Namespace
    stack: Stack
    runner: Runner
    conn: psycopg.Connection  # autocommit, on the shop's database
    products: list[tuple[int, str, int]]  # (id, name, unit amount) on sale, in page order
    checks: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # what a scenario measured besides wrk loads

    @property
    def two_lines(self) -> list[tuple[int, str, int, int]]:
        """An order's lines for the orders written straight into the database: 1 and 2 of the first two products."""
        return [(pid, name, unit, 1 + i) for i, (pid, name, unit) in enumerate(self.products[:2])]
