"""The operations dashboard on the admin home page: numbers, links, queries, cache, charts, access."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from backoffice import dashboard
from backoffice.charts import Layer, Point, TrendChart, nice_step, time_ticks
from orders import demo
from orders.causes import Category, Cause
from orders.models import Order, UnreturnedSnapshot
from orders.snapshots import unreturned_counts
from tests.orders.factories import MerchantFactory, OrderFactory, PaymentAttemptFactory, StaffUserFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/orders/order/"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def flag(order: Order, *, cause: str, ago: timedelta, needs_review: bool = False, now: datetime) -> Order:
    # Read-side fixtures: the flag as the sweep would have left it (the database checks its consistency).
    from orders.causes import category_of

    Order.objects.filter(pk=order.pk).update(
        stuck_since=now - ago, stuck_cause=cause, stuck_category=category_of(cause), needs_review=needs_review
    )
    order.refresh_from_db()
    return order


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def backlog(now):
    """Four unreturned orders at two merchants, and one healthy order that must not count."""
    alpha = MerchantFactory(code="alpha", name="Alpha Shop")
    beta = MerchantFactory(code="beta", name="Beta <Books>")
    fresh = flag(OrderFactory(merchant=alpha), cause=Cause.RESULT_UNKNOWN, ago=timedelta(minutes=10), now=now)
    PaymentAttemptFactory(order=fresh, provider="alipay")
    lost = flag(OrderFactory(merchant=alpha), cause=Cause.CALLBACK_LOST, ago=timedelta(hours=2), needs_review=True,
                now=now)
    PaymentAttemptFactory(order=lost, provider="alipay")
    PaymentAttemptFactory(order=lost, provider="wechatpay")
    oldest = flag(OrderFactory(merchant=alpha, reference="OLD-1"), cause=Cause.NO_PAYMENT_STARTED,
                  ago=timedelta(hours=30), now=now)
    mismatch = flag(OrderFactory(merchant=beta), cause=Cause.AMOUNT_MISMATCH, ago=timedelta(minutes=40),
                    needs_review=True, now=now)
    PaymentAttemptFactory(order=mismatch, provider="wechatpay")
    healthy = OrderFactory(merchant=beta)
    PaymentAttemptFactory(order=healthy, provider="alipay")
    return {"alpha": alpha, "beta": beta, "oldest": oldest}


@pytest.fixture
def agent(db):
    user = StaffUserFactory(username="dash-agent")
    user.user_permissions.add(Permission.objects.get(codename="view_order", content_type__app_label="orders"))
    return user


def home(client, user):
    client.force_login(user)
    response = client.get("/admin/")
    assert response.status_code == 200
    return response


def query(url: str) -> dict[str, list[str]]:
    parts = urlsplit(url)
    assert parts.path == CHANGELIST, url
    return parse_qs(parts.query)


# --- numbers ----------------------------------------------------------------------------------


def test_numbers_match_the_crafted_backlog(client, agent, backlog):
    ops = home(client, agent).context["ops"]

    assert ops["total"]["count"] == 4
    assert ops["needs_review"]["count"] == 2
    assert {c["code"]: c["count"] for c in ops["categories"]} == {"network": 1, "provider": 2, "customer": 1}
    provider = next(c for c in ops["categories"] if c["code"] == "provider")
    assert {c["code"]: c["count"] for c in provider["causes"]} == {"callback_lost": 1, "amount_mismatch": 1}
    assert provider["label"] == str(Category.PROVIDER.label)
    assert {c["label"] for c in provider["causes"]} == {
        str(Cause.CALLBACK_LOST.label), str(Cause.AMOUNT_MISMATCH.label)}
    # An order with attempts at two providers counts at both; the healthy order nowhere.
    assert [(p["code"], p["count"]) for p in ops["providers"]] == [("alipay", 2), ("wechatpay", 2)]
    assert [(m["code"], m["label"], m["count"]) for m in ops["merchants"]] == [
        ("alpha", "Alpha Shop", 3), ("beta", "Beta <Books>", 1)]
    assert [(a["code"], a["count"]) for a in ops["ages"]] == [
        ("lt15m", 1), ("15m-1h", 1), ("1h-6h", 1), ("6h-24h", 0), ("gt24h", 1)]
    assert ops["oldest"]["pk"] == backlog["oldest"].pk
    assert ops["oldest"]["reference"] == "OLD-1"
    assert ops["oldest"]["merchant__code"] == "alpha"
    assert ops["oldest"]["cause_label"] == str(Cause.NO_PAYMENT_STARTED.label)


def test_numbers_agree_with_unreturned_counts(backlog, now):
    numbers = dashboard.dashboard_numbers(now=now)
    assert numbers["counts"] == unreturned_counts(now=now)


def test_an_empty_backlog_shows_zeros_and_no_oldest_order(client, agent):
    response = home(client, agent)
    ops = response.context["ops"]
    assert ops["total"]["count"] == 0
    assert ops["oldest"] is None
    assert ops["categories"] == [] and ops["providers"] == [] and ops["merchants"] == []
    assert [a["count"] for a in ops["ages"]] == [0, 0, 0, 0, 0]
    assert "No unreturned orders right now." in response.content.decode()


# --- links ------------------------------------------------------------------------------------


def test_every_number_links_to_the_filtered_worklist(client, agent, backlog):
    response = home(client, agent)
    ops = response.context["ops"]

    assert query(ops["total"]["url"]) == {"unreturned": ["yes"]}
    assert query(ops["needs_review"]["url"]) == {"unreturned": ["yes"], "needs_review__exact": ["1"]}
    for category in ops["categories"]:
        assert query(category["url"]) == {"unreturned": ["yes"], "stuck_category__exact": [category["code"]]}
        for cause in category["causes"]:
            assert query(cause["url"]) == {"unreturned": ["yes"], "stuck_cause__exact": [cause["code"]]}
    for provider in ops["providers"]:
        assert query(provider["url"]) == {"unreturned": ["yes"], "provider": [provider["code"]]}
    for merchant in ops["merchants"]:
        assert query(merchant["url"]) == {"unreturned": ["yes"], "merchant": [merchant["code"]]}
    assert [query(a["url"]) for a in ops["ages"]] == [
        {"unreturned": ["yes"], "age": [code]} for code in ("lt15m", "15m-1h", "1h-6h", "6h-24h", "gt24h")]
    assert ops["oldest"]["url"] == reverse("admin:orders_order_change", args=[backlog["oldest"].pk])

    html = response.content.decode()
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    expected = [
        f"{CHANGELIST}?unreturned=yes",
        f"{CHANGELIST}?unreturned=yes&amp;needs_review__exact=1",
        f"{CHANGELIST}?unreturned=yes&amp;stuck_category__exact=provider",
        f"{CHANGELIST}?unreturned=yes&amp;stuck_cause__exact=callback_lost",
        f"{CHANGELIST}?unreturned=yes&amp;provider=wechatpay",
        f"{CHANGELIST}?unreturned=yes&amp;merchant=beta",
        f"{CHANGELIST}?unreturned=yes&amp;age=gt24h",
        reverse("admin:orders_order_change", args=[backlog["oldest"].pk]),
    ]
    assert [href for href in expected if href not in hrefs] == []
    # Merchant names are data: escaped, never markup.
    assert "Beta &lt;Books&gt;" in html and "Beta <Books>" not in html


def test_the_model_list_stays_on_the_home_page(client, agent):
    html = home(client, agent).content.decode()
    assert 'id="content-related"' in html
    assert f'href="{CHANGELIST}"' in html  # the app list's link to the order model


# --- queries and cache -----------------------------------------------------------------------


def test_a_handful_of_queries_and_one_or_none_when_cached(rf, agent, backlog, django_assert_max_num_queries):
    request = rf.get("/admin/")
    request.user = agent
    agent.has_perm("orders.view_order")  # permissions are loaded once per request, not by the dashboard
    with django_assert_max_num_queries(8):
        first = dashboard.dashboard_context(request)
    # The test cache is in memory (or Redis): a cached dashboard touches the database at most once.
    with django_assert_max_num_queries(1):
        second = dashboard.dashboard_context(request)
    assert second["ops"]["total"] == first["ops"]["total"]


def test_uncached_numbers_take_six_queries(backlog, django_assert_num_queries):
    with django_assert_num_queries(6):
        dashboard.dashboard_numbers()


def test_a_cached_home_page_does_not_scan_orders_or_snapshots(client, agent, backlog):
    home(client, agent)
    with CaptureQueriesContext(connection) as queries:
        home(client, agent)
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "orders_order" not in tables and "orders_unreturnedsnapshot" not in tables


def test_numbers_are_cached_briefly(client, agent, backlog, now):
    assert home(client, agent).context["ops"]["total"]["count"] == 4
    assert cache.get(dashboard.CACHE_KEY) is not None
    flag(OrderFactory(merchant=backlog["beta"]), cause=Cause.PROCESSING_ERROR, ago=timedelta(hours=1), now=now)

    assert home(client, agent).context["ops"]["total"]["count"] == 4  # from the cache
    cache.delete(dashboard.CACHE_KEY)
    assert home(client, agent).context["ops"]["total"]["count"] == 5
    assert 10 <= dashboard.CACHE_SECONDS <= 60


# --- access -----------------------------------------------------------------------------------


def test_staff_without_view_order_see_no_numbers(client, backlog):
    clerk = StaffUserFactory(username="dash-clerk")
    clerk.user_permissions.add(Permission.objects.get(codename="view_merchant", content_type__app_label="orders"))
    response = home(client, clerk)
    assert "ops" not in response.context
    html = response.content.decode()
    assert "?unreturned=yes" not in html
    assert "trend-chart" not in html and "Unreturned orders now" not in html
    assert "needs the permission to view orders" in html
    assert cache.get(dashboard.CACHE_KEY) is None  # nothing was even computed


def test_non_staff_are_sent_to_the_login_page(client, backlog):
    client.force_login(UserFactory(username="dash-customer"))
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- trend ------------------------------------------------------------------------------------


def snapshot(at: datetime, total: int, **by_category: int) -> UnreturnedSnapshot:
    return UnreturnedSnapshot.objects.create(
        taken_at=at, total=total, needs_review=0, by_cause={}, by_category=by_category, by_provider={}, by_age={}
    )


def test_trend_points_take_the_last_snapshot_of_each_step(now):
    # Three snapshots in one 15-minute step of the day chart, one two days ago, one too old.
    base = now - timedelta(hours=3)
    for minutes, total in ((1, 10), (6, 11), (11, 12)):
        snapshot(base + timedelta(minutes=minutes), total, network=total)
    snapshot(now - timedelta(days=2), 7, customer=7)
    snapshot(now - timedelta(days=8), 99, customer=99)

    points = dashboard.trend_points(now=now)
    assert [p[1] for p in points["day"]] == [12]
    assert [p[1] for p in points["week"]] == [7, 12]
    assert points["week"][-1][3] == {"network": 12}


def test_the_trend_ends_at_the_live_number(client, agent, backlog, now):
    snapshot(now - timedelta(hours=2), 3, provider=2, customer=1)
    ops = home(client, agent).context["ops"]
    day = ops["charts"][0]["svg"]
    # Two points: the snapshot and the backlog now (4 orders).
    assert day.count("<circle") == 2
    assert "4 unreturned orders, 2 needing review" in day


def test_charts_say_no_data_yet_without_snapshots(client, agent, backlog):
    ops = home(client, agent).context["ops"]
    assert [chart["key"] for chart in ops["charts"]] == ["day", "week"]
    for chart in ops["charts"]:
        assert "No data yet" in chart["svg"]
        assert "<circle" not in chart["svg"]


# --- the SVG itself ---------------------------------------------------------------------------

START = datetime(2024, 6, 10, 0, 30, tzinfo=dt_timezone.utc)
END = START + timedelta(hours=24)
LAYERS = [Layer("network", "Network"), Layer("customer", "Customer")]


def chart(points, **options) -> str:
    return TrendChart(title="Backlog <today>", start=START, end=END, points=points, stack=LAYERS, **options).render()


def test_svg_renders_points_layers_tooltips_and_accessible_text():
    points = [
        Point(at=START + timedelta(hours=h), total=h + 2, needs_review=1, parts=(h, 2)) for h in range(0, 24, 2)
    ]
    svg = chart(points, max_gap=timedelta(hours=3))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'role="img"' in svg
    label = re.search(r'aria-label="([^"]*)"', svg).group(1)
    assert "Backlog &lt;today&gt;" in label and "24 unreturned" in label
    assert svg.count("<circle") == len(points)
    assert svg.count("<title>") == 1 + len(points) + len(LAYERS)
    assert 'class="chart-layer chart-layer-network"' in svg and 'class="chart-layer chart-layer-customer"' in svg
    assert 'class="chart-line"' in svg
    assert "<today>" not in svg  # escaped everywhere
    assert "No data yet" not in svg


def test_svg_labels_times_in_the_active_time_zone():
    points = [Point(at=START + timedelta(hours=1), total=3)]
    with timezone.override(dt_timezone.utc):
        utc = chart(points)
    with timezone.override("Asia/Shanghai"):
        shanghai = chart(points)
    axis = re.compile(r'<text class="chart-label[^"]*" x="[^"]*" y="[^"]*" text-anchor="middle">([^<]+)</text>')
    assert axis.findall(utc)[:2] == ["03:00", "06:00"]
    assert axis.findall(shanghai)[:2] == ["09:00", "12:00"]  # UTC+8
    assert "01:30" in utc and "09:30" in shanghai  # the point's tooltip


def test_svg_for_no_data_says_so():
    svg = chart([])
    assert 'role="img"' in svg and "No data yet" in svg
    assert "<circle" not in svg and "chart-layer" not in svg
    assert "no data yet" in re.search(r'aria-label="([^"]*)"', svg).group(1)


def test_svg_does_not_join_points_across_a_gap():
    points = [Point(at=START + timedelta(minutes=15 * i), total=5, parts=(5, 0)) for i in range(4)]
    points += [Point(at=START + timedelta(hours=10, minutes=15 * i), total=6, parts=(6, 0)) for i in range(4)]
    svg = chart(points, max_gap=timedelta(minutes=40))
    assert svg.count('class="chart-line"') == 2


def test_svg_text_follows_the_active_language():
    with translation.override("zh-hans"):
        svg = chart([])
        assert translation.gettext("No data yet") in svg


def test_week_axis_labels_days():
    start = datetime(2024, 6, 3, 12, 0, tzinfo=dt_timezone.utc)
    with timezone.override(dt_timezone.utc), translation.override("en"):
        svg = TrendChart(title="Week", start=start, end=start + timedelta(days=7),
                         points=[Point(at=start + timedelta(days=1), total=1)], tick_hours=24).render()
    assert ">June 4<" in svg and ">June 10<" in svg


@pytest.mark.parametrize(("maximum", "step"), [(0, 1), (3, 1), (7, 2), (40, 10), (101, 50), (451, 200)])
def test_nice_steps(maximum, step):
    assert nice_step(maximum) == step


def test_time_ticks_fall_on_local_hours():
    with timezone.override("Asia/Kolkata"):  # UTC+5:30
        ticks = time_ticks(START, END, every_hours=6)
        local = [timezone.localtime(t) for t in ticks]
    assert local and all(t.minute == 0 and t.hour % 6 == 0 for t in local)


# --- the demo's history -----------------------------------------------------------------------


def test_seeding_backfills_a_week_of_snapshots_ending_at_the_seeded_backlog():
    now = timezone.now().replace(second=0, microsecond=0)
    demo.seed_demo(orders=300, seed=3, now=now)

    snapshots = list(UnreturnedSnapshot.objects.order_by("taken_at"))
    assert snapshots[0].taken_at == now - timedelta(days=7)
    assert snapshots[-1].taken_at == now
    assert all(s.taken_at <= now for s in snapshots)
    recent = [s for s in snapshots if s.taken_at >= now - timedelta(hours=24)]
    assert len(recent) == 97  # every 15 minutes in the last day
    last = snapshots[-1]
    counts = unreturned_counts(now=now)
    assert (last.total, last.needs_review, last.by_cause, last.by_category, last.by_provider, last.by_age) == (
        counts["total"], counts["needs_review"], counts["by_cause"], counts["by_category"], counts["by_provider"],
        counts["by_age"])
    assert any(s.total for s in snapshots[:-1])
    # Running it again adds nothing.
    assert demo.backfill_unreturned_snapshots(now=now) == 0
    assert UnreturnedSnapshot.objects.count() == len(snapshots)
