from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.core.cache import cache

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
