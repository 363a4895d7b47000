"""Server-rendered SVG charts for the staff dashboard: no JavaScript, no CDN.

Pure functions from numbers to markup. Every piece of text goes through `format_html` (or
`escape`), so a label can never inject markup; colours come from CSS classes, so the
admin's light and dark themes both apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

# Geometry of the drawing, in viewBox units; the SVG scales to the width of its box.
WIDTH = 860
HEIGHT = 220
MARGIN_LEFT = 44
MARGIN_RIGHT = 14
MARGIN_TOP = 12
MARGIN_BOTTOM = 28


@dataclass(frozen=True)
class Point:
    at: datetime
    total: int
    needs_review: int = 0
    # Stacked parts (e.g. per category), in the order of `TrendChart.stack`; may be empty.
    parts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Layer:
    key: str  # becomes the CSS class "chart-layer-<key>"
    label: str


def nice_step(maximum: float, ticks: int = 4) -> int:
    """A whole, round step (1, 2, 5, 10, 20, 25, 50 …) so that `ticks` steps reach `maximum`."""
    if maximum <= ticks:
        return 1
    raw = maximum / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * magnitude
        if step >= raw and step == int(step):
            return int(step)
    return int(10 * magnitude)


def time_ticks(start: datetime, end: datetime, *, every_hours: int) -> list[datetime]:
    """Aware datetimes between start and end at whole local hours divisible by `every_hours`
    (24: local midnights), in the active time zone."""
    tz = timezone.get_current_timezone()
    local = timezone.localtime(start, tz).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    ticks = []
    wall = local + timedelta(hours=1)
    end_wall = timezone.localtime(end, tz).replace(tzinfo=None)
    while wall <= end_wall:
        if wall.hour % every_hours == 0:
            aware = timezone.make_aware(wall, tz)
            if start <= aware <= end:
                ticks.append(aware)
        wall += timedelta(hours=1)
    return ticks


def _segments(points: Sequence[Point], max_gap: timedelta) -> list[list[Point]]:
    """Runs of points without a gap longer than `max_gap`: a missing stretch is not drawn as a line."""
    runs: list[list[Point]] = []
    for point in points:
        if runs and point.at - runs[-1][-1].at <= max_gap:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _n(value: float) -> str:
    return f"{value:.1f}"


def _path(coords: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)


def point_label(at: datetime) -> str:
    local = timezone.localtime(at)
    return f"{date_format(local, 'MONTH_DAY_FORMAT')} {date_format(local, 'H:i')}"


@dataclass(frozen=True)
class TrendChart:
    title: str
    start: datetime
    end: datetime
    points: Sequence[Point]
    stack: Sequence[Layer] = ()
    # Ticks on the time axis: every n local hours; 24 labels days instead of times.
    tick_hours: int = 3
    # Points further apart than this are not joined (the sweep was not running).
    max_gap: timedelta = timedelta(minutes=40)

    def render(self) -> SafeString:
        points = [p for p in sorted(self.points, key=lambda p: p.at) if self.start <= p.at <= self.end]
        if not points:
            summary = _("%(title)s: no data yet.") % {"title": self.title}
        else:
            last = points[-1]
            peak = max(points, key=lambda p: p.total)
            summary = _("%(title)s: %(last)d unreturned at %(last_time)s; highest %(peak)d at %(peak_time)s.") % {
                "title": self.title, "last": last.total, "last_time": point_label(last.at),
                "peak": peak.total, "peak_time": point_label(peak.at),
            }
        parts = [
            format_html(
                '<svg class="trend-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" '
                'aria-label="{}" preserveAspectRatio="xMidYMid meet">',
                WIDTH, HEIGHT, summary,
            ),
            format_html("<title>{}</title>", summary),
        ]
        left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
        span = (self.end - self.start).total_seconds() or 1.0

        def x_of(at: datetime) -> float:
            return left + (right - left) * (at - self.start).total_seconds() / span

        maximum = max((p.total for p in points), default=0)
        step = nice_step(maximum)
        y_max = step * math.ceil(maximum / step) if maximum > 4 else 4

        def y_of(value: float) -> float:
            return bottom - (bottom - top) * value / y_max

        # Grid and value axis.
        parts.append(mark_safe('<g class="chart-grid" aria-hidden="true">'))
        # Without data a value scale would only suggest numbers that do not exist.
        for value in range(0, y_max + 1, step) if points else ():
            y = y_of(value)
            parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}"/>', left, right, _n(y), _n(y)))
            parts.append(format_html(
                '<text class="chart-label" x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
                left - 6, _n(y), value,
            ))
        # Time axis.
        for index, tick in enumerate(time_ticks(self.start, self.end, every_hours=self.tick_hours)):
            x = x_of(tick)
            local = timezone.localtime(tick)
            label = date_format(local, "MONTH_DAY_FORMAT") if self.tick_hours >= 24 else date_format(local, "H:i")
            parts.append(format_html('<line class="chart-tick" x1="{}" x2="{}" y1="{}" y2="{}"/>',
                                     _n(x), _n(x), bottom, bottom + 4))
            # Every other label can be hidden by CSS where the chart is narrow.
            parts.append(format_html(
                '<text class="chart-label{}" x="{}" y="{}" text-anchor="middle">{}</text>',
                " chart-label-alternate" if index % 2 else "", _n(x), bottom + 17, label,
            ))
        parts.append(format_html('<line class="chart-axis" x1="{}" x2="{}" y1="{}" y2="{}"/>',
                                 left, right, bottom, bottom))
        parts.append(mark_safe("</g>"))

        if not points:
            parts.append(format_html(
                '<text class="chart-empty" x="{}" y="{}" text-anchor="middle" dominant-baseline="middle">{}</text>',
                _n((left + right) / 2), _n((top + bottom) / 2), _("No data yet"),
            ))
            parts.append(mark_safe("</svg>"))
            return mark_safe("".join(parts))

        # Dots shrink when points crowd (a week of hourly points), so the line stays readable.
        radius = _n(max(1.2, min(2.2, (right - left) / max(len(points), 1) / 3)))
        for run in _segments(points, self.max_gap):
            xs = [x_of(p.at) for p in run]
            # Stacked layers, bottom to top; each is the band between its floor and its ceiling.
            if self.stack:
                floor = [0] * len(run)
                for index, layer in enumerate(self.stack):
                    ceiling = [f + (p.parts[index] if index < len(p.parts) else 0) for f, p in zip(floor, run)]
                    if any(c != f for c, f in zip(ceiling, floor)):
                        if len(run) == 1:
                            coords_top = [(xs[0] - 2, y_of(ceiling[0])), (xs[0] + 2, y_of(ceiling[0]))]
                            coords_bottom = [(xs[0] + 2, y_of(floor[0])), (xs[0] - 2, y_of(floor[0]))]
                        else:
                            coords_top = [(x, y_of(v)) for x, v in zip(xs, ceiling)]
                            coords_bottom = [(x, y_of(v)) for x, v in reversed(list(zip(xs, floor)))]
                        parts.append(format_html(
                            '<path class="chart-layer chart-layer-{}" d="{} Z"><title>{}</title></path>',
                            layer.key, _path(coords_top + coords_bottom), layer.label,
                        ))
                    floor = ceiling
            if len(run) > 1:
                parts.append(format_html('<path class="chart-line" d="{}"/>',
                                         _path([(x, y_of(p.total)) for x, p in zip(xs, run)])))
            for x, point in zip(xs, run):
                tip = ngettext(
                    "%(time)s: %(count)d unreturned order, %(review)d needing review",
                    "%(time)s: %(count)d unreturned orders, %(review)d needing review",
                    point.total,
                ) % {"time": point_label(point.at), "count": point.total, "review": point.needs_review}
                if self.stack and point.parts:
                    tip += "".join(
                        f"\n{layer.label}: {value}" for layer, value in zip(self.stack, point.parts) if value
                    )
                parts.append(format_html(
                    '<circle class="chart-point" cx="{}" cy="{}" r="{}"><title>{}</title></circle>',
                    _n(x), _n(y_of(point.total)), radius, tip,
                ))
        parts.append(mark_safe("</svg>"))
        return mark_safe("".join(parts))
