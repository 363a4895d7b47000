"""The operations dashboard on the admin home page.

The numbers come from a handful of aggregate queries over the flagged orders (partial
indexes keep them small however many orders there are) and the sweep's backlog snapshots
for the trends. They are computed once for everyone and kept in the cache for
`CACHE_SECONDS`; labels, links and charts are built per request, in the reader's language
and time zone. Every number links to the order worklist, filtered to exactly those orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.core.cache import cache
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy

from backoffice.charts import Layer, Point, TrendChart
from orders.causes import CAUSE_CATEGORY, Category, Cause
from orders.models import Order, UnreturnedSnapshot
from orders.snapshots import AGE_BUCKETS, unreturned_counts

CACHE_KEY = "backoffice:dashboard:v1"
CACHE_SECONDS = 30
TOP_MERCHANTS = 8

AGE_LABELS = {
    "lt15m": gettext_lazy("< 15 min"),
    "15m-1h": gettext_lazy("15 min to 1 h"),
    "1h-6h": gettext_lazy("1 to 6 h"),
    "6h-24h": gettext_lazy("6 to 24 h"),
    "gt24h": gettext_lazy("> 24 h"),
}


@dataclass(frozen=True)
class TrendWindow:
    key: str
    title: object  # lazy translation
    length: timedelta
    step: timedelta  # one point per step: the last snapshot taken in it
    tick_hours: int


TREND_WINDOWS = (
    TrendWindow("day", gettext_lazy("Unreturned orders, last 24 hours"), timedelta(hours=24), timedelta(minutes=15), 3),
    TrendWindow("week", gettext_lazy("Unreturned orders, last 7 days"), timedelta(days=7), timedelta(hours=1), 24),
)


# --- numbers (cached) ----------------------------------------------------------------------


def top_merchants(*, limit: int = TOP_MERCHANTS) -> list[dict]:
    """The merchants with the most unreturned orders: one query."""
    rows = (
        Order.objects.filter(stuck_since__isnull=False)
        .order_by()
        .values("merchant__code", "merchant__name")
        .annotate(n=Count("pk"))
        .order_by("-n", "merchant__code")[:limit]
    )
    return [{"code": r["merchant__code"], "name": r["merchant__name"], "count": r["n"]} for r in rows]


def oldest_stuck_order() -> dict | None:
    """The order flagged longest ago: one query on the unreturned index."""
    return (
        Order.objects.filter(stuck_since__isnull=False)
        .order_by("stuck_since", "pk")
        .values("pk", "reference", "merchant__code", "stuck_since", "stuck_cause", "needs_review")
        .first()
    )


def _downsample(rows: list[tuple], *, since: datetime, step: timedelta) -> list[tuple]:
    """The last row of every `step`-long bucket from `since` on (rows sorted by time)."""
    picked: dict[int, tuple] = {}
    for row in rows:
        if row[0] >= since:
            picked[int((row[0] - since) / step)] = row
    return [picked[key] for key in sorted(picked)]


def trend_points(*, now: datetime) -> dict[str, list[tuple]]:
    """Backlog points per trend window, from the sweep's snapshots: one query.

    Each point is (taken_at, total, needs_review, by_category).
    """
    longest = max(window.length for window in TREND_WINDOWS)
    rows = list(
        UnreturnedSnapshot.objects.filter(taken_at__gte=now - longest, taken_at__lte=now)
        .order_by("taken_at")
        .values_list("taken_at", "total", "needs_review", "by_category")
    )
    return {
        window.key: _downsample(rows, since=now - window.length, step=window.step)
        for window in TREND_WINDOWS
    }


def dashboard_numbers(*, now: datetime | None = None) -> dict:
    """Everything the dashboard shows, uncached: six queries."""
    now = now or timezone.now()
    counts = unreturned_counts(now=now)  # three queries
    trends = trend_points(now=now)
    if any(trends.values()):
        # The trend ends at the backlog right now, the same number as the headline.
        live = (now, counts["total"], counts["needs_review"], counts["by_category"])
        trends = {key: [*points, live] if points else points for key, points in trends.items()}
    return {
        "now": now,
        "counts": counts,
        "top_merchants": top_merchants(),
        "oldest": oldest_stuck_order(),
        "trends": trends,
    }


def cached_dashboard_numbers() -> dict:
    numbers = cache.get(CACHE_KEY)
    if numbers is None:
        numbers = dashboard_numbers()
        cache.set(CACHE_KEY, numbers, CACHE_SECONDS)
    return numbers


# --- presentation (per request) ------------------------------------------------------------


def worklist_url(**filters: str) -> str:
    """The order worklist showing unreturned orders, narrowed by `filters`."""
    query = {"unreturned": "yes", **filters}
    return f"{reverse('admin:orders_order_changelist')}?{urlencode(query)}"


def _bars(rows: list[dict]) -> list[dict]:
    """Adds `share`: the row's bar length as a percentage of the longest bar."""
    longest = max((row["count"] for row in rows), default=0) or 1
    for row in rows:
        # A whole percentage (safe in CSS in every locale); a non-zero count stays visible.
        row["share"] = max(1, round(100 * row["count"] / longest)) if row["count"] else 0
    return rows


def _label(choices: type, value: str) -> str:
    try:
        return str(choices(value).label)
    except ValueError:
        return value


def presentation(numbers: dict) -> dict:
    counts = numbers["counts"]
    now = numbers["now"]

    causes_by_category: dict[str, list[dict]] = {}
    for cause, n in counts["by_cause"].items():
        if n:
            causes_by_category.setdefault(CAUSE_CATEGORY.get(cause, ""), []).append({
                "code": cause, "label": _label(Cause, cause), "count": n,
                "url": worklist_url(stuck_cause__exact=cause),
            })
    _bars([row for rows in causes_by_category.values() for row in rows])
    categories = _bars([
        {
            "code": category, "label": _label(Category, category), "count": n,
            "url": worklist_url(stuck_category__exact=category),
            "causes": sorted(causes_by_category.get(category, []), key=lambda r: (-r["count"], r["label"])),
        }
        for category, n in counts["by_category"].items() if n
    ])
    categories.sort(key=lambda r: (-r["count"], r["label"]))

    providers = _bars(sorted(
        ({"code": name, "label": name, "count": n, "url": worklist_url(provider=name)}
         for name, n in counts["by_provider"].items() if n),
        key=lambda r: (-r["count"], r["label"]),
    ))
    merchants = _bars([
        {"code": m["code"], "label": m["name"], "count": m["count"], "url": worklist_url(merchant=m["code"])}
        for m in numbers["top_merchants"]
    ])
    ages = _bars([
        {"code": code, "label": str(AGE_LABELS[code]), "count": counts["by_age"].get(code, 0),
         "url": worklist_url(age=code)}
        for code in AGE_BUCKETS
    ])

    oldest = numbers["oldest"]
    if oldest is not None:
        oldest = {
            **oldest,
            "cause_label": _label(Cause, oldest["stuck_cause"]),
            "url": reverse("admin:orders_order_change", args=[oldest["pk"]]),
        }

    layers = [Layer(category.value, str(category.label)) for category in Category]
    charts = []
    for window in TREND_WINDOWS:
        points = [
            Point(at=at, total=total, needs_review=review,
                  parts=tuple((by_category or {}).get(layer.key, 0) for layer in layers))
            for at, total, review, by_category in numbers["trends"].get(window.key, [])
        ]
        chart = TrendChart(
            title=str(window.title), start=now - window.length, end=now, points=points, stack=layers,
            tick_hours=window.tick_hours, max_gap=window.step * 2.5,
        )
        charts.append({"key": window.key, "title": chart.title, "svg": chart.render()})

    return {
        "now": now,
        "cache_seconds": CACHE_SECONDS,
        "total": {"count": counts["total"], "url": worklist_url()},
        "needs_review": {"count": counts["needs_review"], "url": worklist_url(needs_review__exact="1")},
        "oldest": oldest,
        "ages": ages,
        "categories": categories,
        "providers": providers,
        "merchants": merchants,
        "charts": charts,
        "legend": layers,
    }


def dashboard_context(request) -> dict:
    if not request.user.has_perm("orders.view_order"):
        return {"ops_forbidden": True}
    return {"ops": presentation(cached_dashboard_numbers())}
