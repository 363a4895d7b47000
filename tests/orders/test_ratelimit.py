from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.core.cache import cache
from django.test import RequestFactory, override_settings

from orders import ratelimit

pytestmark = pytest.mark.django_db

START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)  # a window boundary for 60 s windows


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()


def test_hits_up_to_the_limit_are_allowed_and_the_next_is_refused_with_the_wait():
    for _ in range(3):
        assert ratelimit.take([("k", 3)], window_seconds=60, now=START) is None

    assert ratelimit.take([("k", 3)], window_seconds=60, now=START.replace(second=45)) == pytest.approx(15)


def test_a_new_window_starts_counting_again():
    for _ in range(3):
        ratelimit.take([("k", 3)], window_seconds=60, now=START)

    assert ratelimit.take([("k", 3)], window_seconds=60, now=START.replace(minute=1)) is None


def test_a_refused_hit_is_not_counted_against_the_other_limits():
    ratelimit.take([("order", 1), ("address", 5)], window_seconds=60, now=START)

    assert ratelimit.take([("order", 1), ("address", 5)], window_seconds=60, now=START) is not None
    assert ratelimit.take([("other-order", 1), ("address", 5)], window_seconds=60, now=START) is None
    assert cache.get(f"address:{int(START.timestamp() // 60)}") == 2


# --- the client's address ---


def request_from(remote: str, forwarded: str | None = None):
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **meta)


def test_without_trusted_proxies_the_address_is_remote_addr_whatever_the_header_says():
    assert ratelimit.client_ip(request_from("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=1)
def test_behind_one_proxy_the_address_is_the_one_the_proxy_appended():
    assert ratelimit.client_ip(request_from("10.0.0.2", "198.51.100.1")) == "198.51.100.1"


@override_settings(TRUSTED_PROXIES=1)
def test_addresses_the_client_put_in_the_header_itself_are_ignored():
    assert ratelimit.client_ip(request_from("10.0.0.2", "192.0.2.66, 198.51.100.1")) == "198.51.100.1"


@override_settings(TRUSTED_PROXIES=2)
def test_behind_two_proxies_the_address_is_second_from_the_right():
    assert ratelimit.client_ip(request_from("10.0.0.3", "192.0.2.66, 198.51.100.1, 10.0.0.2")) == "198.51.100.1"


@override_settings(TRUSTED_PROXIES=1)
def test_a_request_that_skipped_the_proxy_counts_by_remote_addr():
    assert ratelimit.client_ip(request_from("203.0.113.9")) == "203.0.113.9"
