"""The home page: the merchant's unreturned orders by cause, with links into the list."""

from __future__ import annotations

import pytest

from orders.causes import Cause
from tests.backoffice.portal.conftest import portal_url
from tests.orders.engine_helpers import flag_order, new_order, pending_order

pytestmark = pytest.mark.django_db


def stuck(merchant, cause: str, *, needs_review: bool = False):
    order, _attempt = pending_order(merchant=merchant)
    flag_order(order, cause, needs_review=needs_review)
    return order


def test_the_home_page_counts_the_merchants_unreturned_orders_by_cause(as_user, merchant, other_merchant, viewer):
    stuck(merchant, Cause.RESULT_UNKNOWN)
    stuck(merchant, Cause.RESULT_UNKNOWN, needs_review=True)
    stuck(merchant, Cause.PAYMENT_DECLINED)
    stuck(other_merchant, Cause.RESULT_UNKNOWN)
    new_order(merchant=merchant)

    response = as_user(viewer).get(portal_url("home", merchant))

    counts = response.context["counts"]
    assert (counts["total"], counts["needs_review"]) == (3, 1)
    assert counts["by_cause"] == {Cause.RESULT_UNKNOWN: 2, Cause.PAYMENT_DECLINED: 1}
    categories = {group["category"]: [(c["cause"], c["count"]) for c in group["causes"]]
                  for group in response.context["categories"]}
    assert categories == {"network": [(Cause.RESULT_UNKNOWN, 2)], "customer": [(Cause.PAYMENT_DECLINED, 1)]}


def test_each_cause_links_to_the_filtered_order_list(as_user, merchant, viewer):
    stuck(merchant, Cause.RESULT_UNKNOWN)
    body = as_user(viewer).get(portal_url("home", merchant)).content.decode()
    assert portal_url("orders", merchant) + "?unreturned=true&amp;cause=result_unknown" in body
    assert "Do not ask the customer to pay again." in body


def test_the_oldest_unreturned_orders_are_listed(as_user, merchant, viewer):
    first = stuck(merchant, Cause.RESULT_UNKNOWN)
    stuck(merchant, Cause.PAYMENT_DECLINED)
    oldest = as_user(viewer).get(portal_url("home", merchant)).context["oldest"]
    assert oldest[0].pk == first.pk


def test_a_merchant_with_nothing_stuck_is_told_so(as_user, merchant, viewer):
    new_order(merchant=merchant)
    assert "Nothing is stuck" in as_user(viewer).get(portal_url("home", merchant)).content.decode()
