"""Signed links to the customer status page."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import signing
from django.test import override_settings
from django.utils import timezone

from orders.status_links import SALT, order_for_token, status_token, status_url
from tests.orders.factories import OrderFactory

pytestmark = pytest.mark.django_db


def test_token_round_trips_to_its_order():
    order = OrderFactory()

    assert order_for_token(status_token(order)) == order


def test_token_carries_the_random_status_token_not_the_id():
    order = OrderFactory()

    token = status_token(order)

    assert token.split(":")[0] == order.status_token
    assert str(order.pk) not in token.split(":")


@override_settings(SITE_URL="https://desk.example.com")
def test_status_url_is_absolute_and_points_at_the_track_page():
    order = OrderFactory()

    with time_machine.travel(timezone.now(), tick=False):  # both tokens carry the same second
        assert status_url(order) == f"https://desk.example.com/track/{status_token(order)}/"


def test_tampered_token_gives_none():
    order = OrderFactory()
    other = OrderFactory()
    value, stamp, signature = status_token(order).split(":")

    assert order_for_token(f"{other.status_token}:{stamp}:{signature}") is None


def test_token_signed_with_another_salt_gives_none():
    order = OrderFactory()

    assert order_for_token(signing.TimestampSigner(salt="other").sign(order.status_token)) is None


@pytest.mark.parametrize("token", ["", "garbage", "a:b:c", "x" * 500])
def test_malformed_token_gives_none(token):
    assert order_for_token(token) is None


def test_expired_token_gives_none():
    order = OrderFactory()
    with time_machine.travel(timezone.now() - timedelta(days=91), tick=False):
        old = status_token(order)

    assert order_for_token(old, max_age_days=90) is None


def test_token_inside_its_max_age_is_accepted():
    order = OrderFactory()
    with time_machine.travel(timezone.now() - timedelta(days=89), tick=False):
        old = status_token(order)

    assert order_for_token(old, max_age_days=90) == order


@override_settings(TRACK_LINK_MAX_AGE_DAYS=1)
def test_max_age_defaults_to_the_setting():
    order = OrderFactory()
    with time_machine.travel(timezone.now() - timedelta(days=2), tick=False):
        old = status_token(order)

    assert order_for_token(old) is None


def test_token_of_an_unknown_order_gives_none():
    token = signing.TimestampSigner(salt=SALT).sign("no-such-order-token")

    assert order_for_token(token) is None
