"""orders/export.csv: managers only, the list's filters, streamed, Excel-friendly and formula-safe."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse

from backoffice.csv_stream import spreadsheet_safe
from orders import services
from orders.causes import Cause
from tests.backoffice.portal.conftest import portal_url
from tests.orders.engine_helpers import ENGINE_ACTOR, flag_order, new_order, pending_order

pytestmark = pytest.mark.django_db


def export(client, merchant, query: str = ""):
    response = client.get(portal_url("orders_export", merchant) + (f"?{query}" if query else ""))
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode("utf-8")


def table(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


def test_the_export_is_utf8_with_a_byte_order_mark_and_an_attachment(as_user, merchant, manager):
    new_order(merchant=merchant)
    response = as_user(manager).get(portal_url("orders_export", merchant))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="orders-jade-tea-')
    assert b"".join(response.streaming_content).startswith("\ufeff".encode())


def test_the_export_has_one_row_per_order_of_the_merchant_only(as_user, merchant, other_merchant, manager):
    mine = [new_order(merchant=merchant, reference=f"JT-{n}") for n in range(3)]
    new_order(merchant=other_merchant, reference="OTHER-1")
    rows = table(export(as_user(manager), merchant))
    assert rows[0][0] == "reference"
    assert sorted(row[0] for row in rows[1:]) == sorted(order.reference for order in mine)


def test_the_export_applies_the_list_filters(as_user, merchant, manager):
    stuck, _attempt = pending_order(merchant=merchant, reference="JT-STUCK")
    flag_order(stuck, Cause.RESULT_UNKNOWN)
    new_order(merchant=merchant, reference="JT-FINE")
    rows = table(export(as_user(manager), merchant, "cause=result_unknown"))
    assert [row[0] for row in rows[1:]] == ["JT-STUCK"]
    header = rows[0]
    assert rows[1][header.index("cause")] == "Payment result unknown"
    assert rows[1][header.index("payment provider")] == "sandbox"
    assert rows[1][header.index("payment attempts")] == "1"


def test_an_invalid_filter_answers_400(as_user, merchant, manager):
    response = as_user(manager).get(portal_url("orders_export", merchant) + "?age=forever")
    assert response.status_code == 400


def test_chinese_names_survive_the_export(as_user, merchant, manager):
    services.create_order(merchant=merchant, reference="JT-CN", amount=Decimal("88.00"), currency="CNY",
                          customer_name="王芳", customer_email="wang@example.com", actor=ENGINE_ACTOR)
    rows = table(export(as_user(manager), merchant))
    assert rows[1][rows[0].index("customer name")] == "王芳"


def test_cells_that_a_spreadsheet_would_run_are_neutralised(as_user, merchant, manager):
    services.create_order(merchant=merchant, reference="=HYPERLINK(\"http://evil\")", amount=Decimal("10.00"),
                          currency="CNY", customer_name="@SUM(A1)", customer_email="x@example.com",
                          customer_phone="+86 138 0013 8000", actor=ENGINE_ACTOR)
    rows = table(export(as_user(manager), merchant))
    header, row = rows[0], rows[1]
    assert row[header.index("reference")] == "'=HYPERLINK(\"http://evil\")"
    assert row[header.index("customer name")] == "'@SUM(A1)"
    assert row[header.index("customer phone")] == "+86 138 0013 8000"


@pytest.mark.parametrize(("value", "safe"), [
    ("=1+2", "'=1+2"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("-2+3+cmd", "'-2+3+cmd"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tTAB", "'\tTAB"), ("plain", "plain"), ("+86 138 0013 8000", "+86 138 0013 8000"),
    ("", ""), (None, ""), (12, "12"),
])
def test_spreadsheet_safe(value, safe):
    assert spreadsheet_safe(value) == safe


def test_the_export_link_carries_the_filters_for_managers_only(as_user, merchant, manager, operator):
    url = portal_url("orders", merchant) + "?cause=result_unknown"
    export_link = portal_url("orders_export", merchant) + "?cause=result_unknown"
    assert export_link in as_user(manager).get(url).content.decode()
    assert portal_url("orders_export", merchant) not in as_user(operator).get(url).content.decode()
