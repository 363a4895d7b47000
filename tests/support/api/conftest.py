# The orders API's fixtures: fresh throttle counts for every test, and the merchant "acme".
from tests.orders.api.conftest import _fresh_throttle_counts, merchant, other_merchant  # noqa: F401
