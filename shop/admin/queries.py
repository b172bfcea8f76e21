"""The orders the operator asked for: filters from the query string, validated."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from ..models import Order
from ..orders import OrderStatus

PER_PAGE = 50
MAX_PAGE = 100_000


@dataclass(frozen=True)
class OrderFilter:
    """Status and an inclusive range of UTC creation dates; None means any."""

    status: OrderStatus | None = None
    created_from: date | None = None
    created_to: date | None = None

    @classmethod
    def from_args(cls, args: MultiDict[str, str]) -> OrderFilter:
        """Parse `status`, `from` and `to` (YYYY-MM-DD); BadRequest for anything else."""
        created_from = _parse_date(args.get("from", ""), "from")
        created_to = _parse_date(args.get("to", ""), "to")
        if created_from and created_to and created_from > created_to:
            raise BadRequest("The 'from' date is after the 'to' date.")
        return cls(_parse_status(args.get("status", "")), created_from, created_to)

    def query(self) -> Select[tuple[Order]]:
        """Matching orders, newest first, with their items loaded in one extra query."""
        query = select(Order).options(selectinload(Order.items)).order_by(Order.created_at.desc(), Order.id.desc())
        if self.status:
            query = query.where(Order.status == self.status)
        if self.created_from:
            query = query.where(Order.created_at >= _midnight(self.created_from))
        if self.created_to and self.created_to < date.max:  # the last representable day has no "next day"
            query = query.where(Order.created_at < _midnight(self.created_to + timedelta(days=1)))
        return query

    def as_args(self) -> dict[str, str]:
        """The filter as query-string arguments, for links that keep it."""
        args = {
            "status": self.status or "",
            "from": self.created_from.isoformat() if self.created_from else "",
            "to": self.created_to.isoformat() if self.created_to else "",
        }
        return {key: value for key, value in args.items() if value}


def parse_page(value: str) -> int:
    """A page number from 1 to MAX_PAGE, in ASCII digits; BadRequest otherwise."""
    # isdigit() alone accepts "²", which int() then refuses.
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest("The page must be a positive whole number.")
    return int(value)


def _parse_status(value: str) -> OrderStatus | None:
    value = value.strip()
    if not value:
        return None
    try:
        return OrderStatus(value)
    except ValueError:
        raise BadRequest(f"Unknown order status {value!r}.") from None


def _parse_date(value: str, name: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequest(f"The '{name}' date must look like 2025-01-31.") from None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
