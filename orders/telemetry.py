"""Counters of the engine kept in the database, read by `/metrics` (backoffice.monitoring.metrics).

Counters cannot live in process memory: several web processes answer scrapes and several task
workers on several machines do the counting, and a scrape must see the sum of all of them.
Each counter is one `TelemetryCounter` row per (name, label set), incremented with

    INSERT ... VALUES (...), (...) ON CONFLICT (name, labels_key) DO UPDATE SET value = value + excluded.value

(PostgreSQL and SQLite alike): one statement for a whole batch of increments, run after the
caller's transaction commits (`transaction.on_commit`), so the engine's own transaction never
waits on the lock of a hot counter row. The rows of one statement are sorted, so two writers
lock them in the same order and cannot deadlock. A failed write is logged and dropped: a
counter is worth less than the work it counts.

Histograms are stored Prometheus-style: one counter per bucket (observations up to that
bound and above the previous one; the exporter makes them cumulative), plus `_sum` (in
microseconds, an integer) and `_count`.
"""

from __future__ import annotations

import json
import logging
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

# Counter names (the exporter adds its `recovery_` prefix and the `_total` suffix).
CHECKS = "provider_checks"  # labels: provider, source, result ("answer" | "error"), outcome
CHECK_LATENCY = "provider_check_latency_seconds"  # histogram, labels: provider
CALLBACKS = "provider_callbacks"  # labels: provider, signature ("valid" | "invalid"), outcome

# Seconds. A provider answer slower than the adapter's read timeout (5 s by default) lands in +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INF = "+Inf"
SUM_SCALE = 1_000_000  # _sum is stored in microseconds


@dataclass(frozen=True)
class Increment:
    name: str
    labels: Mapping[str, str]
    by: int = 1


def labels_key(labels: Mapping[str, object]) -> str:
    return json.dumps({str(k): str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def bucket_label(bound: float) -> str:
    """The `le` label of a bucket as Prometheus writes it (1.0, 0.25, +Inf)."""
    return INF if math.isinf(bound) else repr(float(bound))


def histogram_increments(
    name: str, labels: Mapping[str, str], values: Iterable[float], buckets: Sequence[float] = LATENCY_BUCKETS
) -> list[Increment]:
    """The increments that record `values` (seconds) in the histogram `name`."""
    bounds = sorted(float(b) for b in buckets)
    per_bucket = [0] * (len(bounds) + 1)  # the last one is +Inf
    count, total = 0, 0
    for value in values:
        if value is None or math.isnan(value):
            continue
        per_bucket[bisect_left(bounds, value)] += 1
        count += 1
        total += round(value * SUM_SCALE)
    if not count:
        return []
    increments = [
        Increment(f"{name}_bucket", {**labels, "le": bucket_label(bound)}, n)
        for bound, n in zip([*bounds, math.inf], per_bucket)
        if n
    ]
    increments.append(Increment(f"{name}_sum", dict(labels), total))
    increments.append(Increment(f"{name}_count", dict(labels), count))
    return increments


def check_increments(checks: Iterable[tuple[str, str, str, bool, float | None]]) -> list[Increment]:
    """Increments for journaled checks given as (provider, source, outcome, is_error, latency
    in seconds or None): the outcome counter and the latency histogram, per provider."""
    outcomes: dict[tuple[str, str, str, bool], int] = {}
    latencies: dict[str, list[float]] = {}
    for provider, source, outcome, is_error, latency in checks:
        key = (provider, source, outcome or "none", is_error)
        outcomes[key] = outcomes.get(key, 0) + 1
        if latency is not None:
            latencies.setdefault(provider, []).append(latency)
    increments = [
        Increment(CHECKS, {"provider": p, "source": s, "result": "error" if e else "answer", "outcome": o}, n)
        for (p, s, o, e), n in outcomes.items()
    ]
    for provider, values in latencies.items():
        increments.extend(histogram_increments(CHECK_LATENCY, {"provider": provider}, values))
    return increments


def add(name: str, labels: Mapping[str, str], by: int = 1) -> None:
    add_many([Increment(name, labels, by)])


def add_many(increments: Iterable[Increment | tuple]) -> None:
    """Add all `increments` ((name, labels, by) tuples or `Increment`s) in one statement once the
    current transaction commits (at once outside a transaction)."""
    rows = _merge(increments)
    if rows:
        transaction.on_commit(lambda: _upsert(rows))


def _merge(increments: Iterable[Increment | tuple]) -> list[tuple[str, str, str, int]]:
    # One row per (name, labels): PostgreSQL refuses to update a row twice in one statement.
    merged: dict[tuple[str, str], tuple[Mapping[str, str], int]] = {}
    for item in increments:
        name, labels, by = (item.name, item.labels, item.by) if isinstance(item, Increment) else item
        if not by:
            continue
        key = (name, labels_key(labels))
        if len(name) > 64 or len(key[1]) > 255:
            raise ValueError(f"telemetry counter {name} {key[1]} does not fit its columns")
        previous = merged.get(key)
        merged[key] = (labels, by + (previous[1] if previous else 0))
    return [(name, key, labels_key(labels), by) for (name, key), (labels, by) in sorted(merged.items())]


def _upsert(rows: list[tuple[str, str, str, int]]) -> None:
    table = "orders_telemetrycounter"
    labels_sql = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    values = ", ".join([f"(%s, %s, {labels_sql}, %s, %s)"] * len(rows))
    now = timezone.now()
    params: list[object] = []
    for name, key, labels_json, by in rows:
        params.extend((name, key, labels_json, by, now))
    sql = (
        f"INSERT INTO {table} (name, labels_key, labels, value, updated_at) VALUES {values} "
        f"ON CONFLICT (name, labels_key) DO UPDATE SET value = {table}.value + excluded.value, "
        f"updated_at = excluded.updated_at"
    )
    try:
        # Runs in autocommit (after the caller's commit): the statement is its own transaction.
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    except Exception:  # noqa: BLE001 - a lost increment must never fail the engine's work
        log.warning("telemetry: %d counter increments were lost", sum(row[3] for row in rows), exc_info=True)
