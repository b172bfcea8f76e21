"""Jinja filters for money and dates."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

from .money import format_money, minor_unit_factor


def isodate(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def humandate(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


def init_app(app: Flask) -> None:
    app.add_template_filter(format_money, "money")
    app.add_template_filter(minor_unit_factor, "minor_factor")
    app.add_template_filter(isodate)
    app.add_template_filter(humandate)
