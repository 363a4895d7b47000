import pytest
from django.core.cache import cache

from tests.orders.factories import MerchantFactory


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # The write throttle counts in the default cache; user ids repeat between tests.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def merchant():
    return MerchantFactory(code="acme")


@pytest.fixture
def other_merchant():
    return MerchantFactory(code="globex")
