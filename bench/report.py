"""The goals table: one row per goal with its median, spread, detail and PASS/MISS, printed as
markdown and kept, with every load, in the results JSON."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(min(values))}–{fmt(max(values))}" if len(values) > 1 else "—"


def rate_text(value: float) -> str:
    return f"{value:,.0f}"


def ms_text(value: float) -> str:
    return f"{value:.1f} ms"


def s_text(value: float) -> str:
    return f"{value:.2f} s"


def ratio_text(value: float) -> str:
    return f"{value:.2f}"


def count_text(value: float) -> str:
    return f"{value:,.0f}"


@dataclass
class Table:
    rows: list[tuple[str, str, str, str, str, bool | None]] = field(default_factory=list)

    def row(self, path: str, measured: list[float], fmt: Callable[[float], str], detail: str, goal: str,
            ok: Callable[[float], bool] | None) -> None:
        """A goal measured once per repetition: its median decides. Nothing measured (not run): no row."""
        if not measured:
            return
        value = median(measured)
        self.rows.append((path, fmt(value), spread(measured, fmt), detail, goal, ok(value) if ok else None))

    def single(self, path: str, value: str, detail: str, goal: str, ok: bool | None) -> None:
        self.rows.append((path, value, "—", detail, goal, ok))

    def markdown(self) -> str:
        lines = ["| path | median | spread | detail | goal | result |", "|---|---:|---:|---|---|---|"]
        for path, value, span, detail, goal, ok in self.rows:
            lines.append(f"| {path} | {value} | {span} | {detail} | {goal} | "
                         f"{'' if ok is None else ('PASS' if ok else '**MISS**')} |")
        return "\n".join(lines)

    def all_met(self) -> bool:
        return all(ok for *_, ok in self.rows if ok is not None)

    def as_json(self) -> list[dict]:
        return [{"path": p, "median": v, "spread": s, "detail": d, "goal": g, "pass": ok}
                for p, v, s, d, g, ok in self.rows]
