"""A development start on real Stripe keys says, loudly, every setting that is missing or suspicious."""
from __future__ import annotations

import pytest

from shop import create_app


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRETS": []}, ["offline banner is off", "STRIPE_WEBHOOK_SECRET is not set"]),
        ({"STRIPE_SECRET_KEY": "sk_live_x", "STRIPE_WEBHOOK_SECRETS": ["whsec_x"]}, ["LIVE mode", "LIVE key in development"]),
        ({"STRIPE_SECRET_KEY": "pk_test_x", "STRIPE_WEBHOOK_SECRETS": ["we_123"]}, ["offline banner is off", "is not a secret key", "does not start with whsec_"]),
        ({"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRETS": ["whsec_x"]}, ["offline banner is off"]),
    ],
)
def test_a_development_start_with_real_keys_warns_about_each_missing_or_suspicious_setting(capsys, settings, warned):
    create_app({"APP_ENV": "development", "SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "STRIPE_OFFLINE": False, **settings})
    warnings = [line for line in capsys.readouterr().out.splitlines() if " WARNING shop: " in line]
    assert len(warnings) == len(warned), warnings
    for line, words in zip(warnings, warned, strict=True):
        assert words in line


def test_a_development_start_offline_warns_about_nothing(capsys):
    create_app({"APP_ENV": "development", "SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "STRIPE_OFFLINE": True, "STRIPE_SECRET_KEY": None})
    assert " WARNING " not in capsys.readouterr().out
