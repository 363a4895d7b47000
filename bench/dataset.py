"""A large, realistic dataset for the benchmarks, generated inside PostgreSQL.

One million orders load in about a minute: every table is filled by a few
`INSERT ... SELECT ... FROM generate_series` statements, so no row crosses the wire. What
each order looks like is decided by its *kind* (the tables `BACKGROUND` and `DUE` below),
joined in SQL from a small `bench_kind` table; small per-row variations come from a
multiplicative hash of the order id, so the same parameters always give the same data.

* Background orders (most of the table): confirmed, cancelled, expired and refunded orders
  with `sweep_due_at` NULL and a payment history (attempts, some checks, signed callbacks,
  events), plus a few percent of open orders whose next look is in the future (young
  orders, flagged orders between two revisits).
* Merchants: 20, one of them large (`bench-01`, 12 % of the orders, 120,000 of a million) and
  19 of about 46,000 each; each kind below is spread over all of them.
* Due orders (`--due`, spread evenly over the whole id range, the worst case for locality):
  the sweep's work, a mix of evidence (open attempts `unknown` / `pending` with checks that
  timed out or answered, lost callbacks, paid orders with and without confirmation failures,
  submitted orders without attempts, declined payments, duplicate payments, flagged orders
  whose cause is unchanged or changes, flagged orders whose news is younger than the threshold
  and are unflagged).

All times are relative to the *anchor*, the moment the dataset was generated; the sweep
benchmark runs with `now = anchor`, so a dataset reused weeks later still does exactly the
same work. The dataset is reused when `bench_meta` records the same parameters, generator
version and migration files; otherwise the bench tables are truncated and regenerated.

Rows respect every CHECK constraint of `orders/models.py`. Foreign-key triggers are
switched off while loading (`session_replication_role = replica`): the generator derives
every reference from ids it creates, and `verify()` checks the joins afterwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.db import connection, models

# Bump when the generated data changes: a dataset made by another version is regenerated.
GENERATOR_VERSION = 5
MERCHANTS = 20
# One large merchant (bench-01, BIG_MERCHANT_SHARE % of the orders: 120,000 of 1,000,000) for the
# API and merchant-page benchmarks, which measure one merchant's lists; the other 19 share the rest
# evenly by id (about 46,000 each). A hash of the id picks the big merchant's orders, so its orders,
# like everyone's, mix every kind, the due ones included.
BIG_MERCHANT = "bench-01"
BIG_MERCHANT_SHARE = 12
STUCK_AFTER_SECONDS = 15 * 60
PROVIDER = "sandbox"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Attempt:
    status: str
    next_check: bool = False  # a re-check is scheduled (open attempts only)
    failure_code: str = ""
    action_every: int = 0  # action_required="3ds" on every n-th order of the kind (0: never)
    n_checks: int = 0
    # timeout | pending | succeeded | pending_then_succeeded | pending_then_malformed | failed
    check_pattern: str = ""
    checks_every: int = 1  # only every n-th order of the kind has the checks
    callback_share: int = 0  # out of 10: share of orders whose attempt has a signed callback


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int  # background: out of 10,000 orders; due: out of 20
    status: str
    # Seconds since the last status change; None: historic (spread over 180 days by id).
    age: tuple[int, int] | None = None
    submitted_lead: int = 300  # seconds from submission to the last status change
    attempt_lead: int = 240  # seconds from the newest attempt's start to the last status change
    sweep: str = "null"  # null | due | revisit (within 10 min) | threshold (status change + stuck_after)
    flag: str = ""  # the cause the order is flagged with now
    needs_review: bool = False
    attempts: tuple[Attempt, ...] = ()  # newest first; at most two
    confirmation_failures: int = 0  # with validation errors on every second order
    due: bool = False

    @property
    def captured(self) -> bool:
        return self.status in ("paid", "confirmed", "refunded")


A = Attempt
OLD = (20 * 60, 6 * 3600)  # past the 15-minute threshold
# About 1 % of the background is flagged (revisited every 10 minutes) and about 600 orders
# are younger than the threshold: the recent traffic of a shop with ~60,000 orders a day.
BACKGROUND: tuple[Kind, ...] = (
    Kind("confirmed", 8194, "confirmed", attempts=(
        A("succeeded", n_checks=1, check_pattern="succeeded", checks_every=5, callback_share=7),)),
    Kind("confirmed_retry", 400, "confirmed", attempts=(
        A("succeeded", callback_share=7), A("failed", failure_code="card_declined", n_checks=1, check_pattern="failed"))),
    Kind("cancelled", 350, "cancelled"),
    Kind("cancelled_expired", 150, "cancelled", attempts=(A("expired"),)),
    Kind("expired", 500, "expired"),
    Kind("refunded", 300, "refunded", attempts=(A("succeeded", callback_share=7),)),
    Kind("failed_flagged", 40, "payment_failed", age=(3600, 3 * 86400), sweep="revisit", flag="payment_declined",
         attempts=(A("failed", failure_code="insufficient_funds", callback_share=10),)),
    Kind("unknown_flagged", 20, "payment_pending", age=OLD, sweep="revisit", flag="result_unknown",
         attempts=(A("unknown", next_check=True, n_checks=1, check_pattern="timeout"),)),
    Kind("paid_flagged", 10, "paid", age=OLD, sweep="revisit", flag="processing_error",
         attempts=(A("succeeded", callback_share=10),)),
    Kind("submitted_flagged", 30, "submitted", age=OLD, sweep="revisit", flag="no_payment_started"),
    Kind("young_submitted", 3, "submitted", age=(0, 14 * 60), sweep="threshold"),
    Kind("young_pending", 3, "payment_pending", age=(0, 14 * 60), sweep="threshold",
         attempts=(A("pending", next_check=True, action_every=2),)),
)
DUE: tuple[Kind, ...] = (
    Kind("unreachable_new", 1, "payment_pending", age=OLD, attempts=(
        A("unknown", next_check=True, n_checks=3, check_pattern="timeout"),)),
    Kind("unreachable_flagged", 1, "payment_pending", age=OLD, flag="provider_unreachable", attempts=(
        A("unknown", next_check=True, n_checks=2, check_pattern="timeout"),)),
    Kind("unknown_new", 1, "payment_pending", age=OLD, attempts=(A("unknown", next_check=True),)),
    Kind("unknown_to_unreachable", 1, "payment_pending", age=OLD, flag="result_unknown", attempts=(
        A("unknown", next_check=True, n_checks=2, check_pattern="timeout"),)),
    Kind("exhausted", 1, "payment_pending", age=OLD, flag="result_unknown", needs_review=True, attempts=(
        A("unknown", n_checks=5, check_pattern="pending_then_malformed"),)),
    Kind("pending_new", 2, "payment_pending", age=OLD, attempts=(
        A("pending", next_check=True, action_every=2, n_checks=2, check_pattern="pending"),)),
    Kind("pending_flagged", 1, "payment_pending", age=OLD, flag="awaiting_customer_action", attempts=(
        A("pending", next_check=True, action_every=2, n_checks=1, check_pattern="pending"),)),
    Kind("callback_lost", 1, "payment_pending", age=OLD, attempts=(
        A("pending", next_check=True, n_checks=2, check_pattern="pending_then_succeeded"),)),
    Kind("paid_new", 1, "paid", age=OLD, attempts=(A("succeeded", callback_share=10),)),
    Kind("paid_flagged", 1, "paid", age=OLD, flag="processing_error", attempts=(A("succeeded", callback_share=10),)),
    Kind("paid_confirmation_failed", 1, "paid", age=OLD, confirmation_failures=2,
         attempts=(A("succeeded", callback_share=10),)),
    Kind("submitted_new", 1, "submitted", age=OLD),
    Kind("submitted_flagged", 2, "submitted", age=OLD, flag="no_payment_started"),
    Kind("declined_new", 1, "payment_failed", age=OLD, attempts=(
        A("failed", failure_code="card_declined", n_checks=1, check_pattern="failed"),)),
    Kind("declined_flagged", 1, "payment_failed", age=OLD, flag="payment_declined", attempts=(
        A("failed", failure_code="do_not_honor", callback_share=10),)),
    # Flagged orders whose news is younger than the threshold: unflagged until they are due again.
    Kind("reopened", 1, "payment_pending", age=(60, 600), flag="no_payment_started", submitted_lead=1800,
         attempt_lead=0, attempts=(A("pending", next_check=True, n_checks=1, check_pattern="pending"),)),
    Kind("unflag", 1, "paid", age=(30, 120), flag="result_unknown", submitted_lead=3660, attempt_lead=3600,
         attempts=(A("succeeded", callback_share=10),)),
    Kind("duplicate", 1, "paid", age=OLD, attempts=(
        A("succeeded", callback_share=10), A("succeeded", callback_share=10))),
)
DUE = tuple(Kind(**{**k.__dict__, "name": "due_" + k.name, "sweep": "due", "due": True}) for k in DUE)
assert sum(k.weight for k in BACKGROUND) == 10_000 and sum(k.weight for k in DUE) == 20
KINDS: tuple[Kind, ...] = BACKGROUND + DUE
DUE_KINDS = [k.name for k in DUE]

# Tables the generator fills (and truncates before regenerating).
TABLES = (
    "orders_orderevent", "orders_providercallback", "orders_paymentcheck", "orders_paymentattempt",
    "orders_order", "orders_recheckpolicy", "orders_merchant",
)


@dataclass
class Dataset:
    orders: int
    due: int
    anchor: datetime
    baseline: dict[str, int] = field(default_factory=dict)  # max id per table right after loading
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False


# --- helpers ------------------------------------------------------------------------------------


def _exec(sql: str, params: list | tuple | dict | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _rows(sql: str, params: list | tuple | dict | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def insert_select(model: type[models.Model], exprs: dict[str, str], tail: str, params: dict | None = None) -> int:
    """INSERT INTO <model's table> (every concrete column) SELECT <exprs> <tail>.

    Columns the generator does not set get the model field's default, so a column added by
    a later migration (with a default) does not break the generator.
    """
    columns, selects, values = [], [], dict(params or {})
    for f in model._meta.concrete_fields:
        column = f.column
        if column in exprs:
            expr = exprs[column]
        elif f.primary_key:
            continue  # the identity column numbers the rows
        else:
            key = f"_default_{column}"
            default = f.get_default()
            if isinstance(f, models.JSONField):
                values[key], expr = json.dumps(default), f"%({key})s::jsonb"
            else:
                values[key], expr = f.get_db_prep_save(default, connection), f"%({key})s"
        columns.append(connection.ops.quote_name(column))
        selects.append(f"({expr})")
    unknown = set(exprs) - {f.column for f in model._meta.concrete_fields}
    if unknown:
        raise RuntimeError(f"{model.__name__} has no columns {sorted(unknown)}")
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(selects)} {tail}"
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.rowcount


def fingerprint(orders: int, due: int) -> str:
    """Parameters, generator version and the migration files: a change in any regenerates."""
    digest = hashlib.sha256(f"v{GENERATOR_VERSION}:{orders}:{due}".encode())
    for path in sorted((ROOT).glob("*/migrations/*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _meta() -> dict:
    _exec("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value jsonb NOT NULL)")
    # Django's connection hands jsonb back as text (JSONField decodes it itself).
    return {key: json.loads(value) if isinstance(value, str) else value
            for key, value in _rows("SELECT key, value FROM bench_meta")}


def _set_meta(key: str, value) -> None:
    _exec(
        "INSERT INTO bench_meta (key, value) VALUES (%s, %s::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        [key, json.dumps(value, default=str)],
    )


def _table_counts() -> dict[str, int]:
    return {t: _rows(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES if t != "orders_recheckpolicy"}


# --- entry point --------------------------------------------------------------------------------


def ensure(*, orders: int, due: int, log=print, force: bool = False) -> Dataset:
    """The dataset for these parameters: reused when it exists, generated otherwise."""
    if due > orders:
        raise ValueError("--due cannot exceed --orders")
    meta = _meta()
    fp = fingerprint(orders, due)
    info = meta.get("dataset")
    if not force and info and info.get("fingerprint") == fp:
        counts = {"orders_order": _rows("SELECT count(*) FROM orders_order WHERE id <= %s", [orders])[0][0]}
        if counts["orders_order"] == orders:
            ds = Dataset(orders=orders, due=due, anchor=datetime.fromisoformat(info["anchor"]),
                         baseline=info["baseline"], counts=info["counts"], seconds=info["seconds"], reused=True)
            log(f"dataset: reusing {orders:,} orders / {due:,} due (generated {info['generated_at']}, "
                f"{info['seconds']:.0f} s)")
            return ds
    return generate(orders=orders, due=due, fp=fp, log=log)


def generate(*, orders: int, due: int, fp: str, log=print) -> Dataset:
    from django.utils import timezone

    from orders.causes import category_of
    from orders.models import (
        Merchant, Order, OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback, RecheckPolicy,
    )

    started = time.monotonic()
    log(f"dataset: generating {orders:,} orders with {due:,} due (takes a minute or two) ...")
    _exec("DELETE FROM bench_meta WHERE key = 'dataset'")
    _exec(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    _exec("DROP TABLE IF EXISTS bench_plan, bench_kind, bench_sweep_snapshot")
    anchor = timezone.now().replace(microsecond=0)

    def step(label: str, fn) -> None:
        t = time.monotonic()
        n = fn()
        log(f"  {label:<22} {n if isinstance(n, str) else f'{n:>10,} rows'}  {time.monotonic() - t:6.1f} s")

    # Merchants and the provider's re-check policy (8 calls in flight, the default).
    for n in range(1, MERCHANTS + 1):
        Merchant.objects.create(code=f"bench-{n:02d}", name=f"Bench merchant {n:02d}",
                                stuck_after=timedelta(seconds=STUCK_AFTER_SECONDS), created_at=anchor)
    RecheckPolicy.objects.create(provider=PROVIDER, max_in_flight=8)

    # The kinds, as a table to join.
    _exec("""
        CREATE UNLOGGED TABLE bench_kind (
            kind text PRIMARY KEY, status text, captured boolean, age_min int, age_max int, sweep text,
            flag text, flag_category text, needs_review boolean, conf_failures int, is_due boolean,
            submitted_lead int, attempt_lead int, a0 jsonb, a1 jsonb
        )""")
    with connection.cursor() as cursor:
        for k in KINDS:
            attempts = [a.__dict__ for a in k.attempts] + [None, None]
            cursor.execute(
                "INSERT INTO bench_kind VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)",
                [k.name, k.status, k.captured, k.age[0] if k.age else None, k.age[1] if k.age else None, k.sweep,
                 k.flag, category_of(k.flag) if k.flag else "", k.needs_review, k.confirmation_failures, k.due,
                 k.submitted_lead, k.attempt_lead,
                 json.dumps(attempts[0]) if attempts[0] else None, json.dumps(attempts[1]) if attempts[1] else None])

    # Which kind each order id is: due orders evenly spread, the rest by a hash of the id.
    stride = orders // due if due else 0
    bg_cases, lower = [], 0
    for k in BACKGROUND:
        bg_cases.append(f"WHEN h < {lower + k.weight} THEN '{k.name}'")
        lower += k.weight
    due_slots = [k.name for k in DUE for _ in range(k.weight)]
    _exec("CREATE UNLOGGED TABLE bench_plan (id bigint PRIMARY KEY, kind text NOT NULL, h2 int NOT NULL)")

    def plan() -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"""
                INSERT INTO bench_plan (id, kind, h2)
                SELECT i,
                       CASE WHEN %(stride)s > 0 AND i %% GREATEST(%(stride)s, 1) = 0 AND i / GREATEST(%(stride)s, 1) <= %(due)s
                            THEN (%(slots)s::text[])[((i / GREATEST(%(stride)s, 1)) %% 20) + 1]
                            ELSE CASE {' '.join(bg_cases)} END
                       END,
                       ((i * 40503) %% 65536)::int
                FROM generate_series(1::bigint, %(orders)s::bigint) AS i,
                     LATERAL (SELECT ((i * 2654435761) %% 4294967296) %% 10000 AS h) AS x
            """, {"stride": stride, "due": due, "slots": due_slots, "orders": orders})
            return cursor.rowcount
    step("plan", plan)
    _exec("ANALYZE bench_plan, bench_kind")

    # Foreign keys: every reference below is derived from ids generated here (see verify()).
    _exec("SET session_replication_role = replica")
    _exec("SET synchronous_commit = off")
    params = {"anchor": anchor, "orders": orders, "stuck": STUCK_AFTER_SECONDS}
    # Per-order derived values, shared by the inserts below.
    base = """
        FROM bench_plan p
        JOIN bench_kind k USING (kind)
        CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM orders_merchant) m
        CROSS JOIN LATERAL (
            SELECT CASE WHEN k.age_min IS NULL
                        THEN %(anchor)s::timestamptz - make_interval(secs => 1800 + (%(orders)s - p.id) * 15552000.0 / %(orders)s)
                        ELSE %(anchor)s::timestamptz - make_interval(secs => k.age_min + p.h2 %% (k.age_max - k.age_min + 1))
                   END AS changed_at,
                   ((1000 + p.id %% 99000)::numeric / 100) AS amount
        ) AS v
        CROSS JOIN LATERAL (
            SELECT v.changed_at - make_interval(secs => k.submitted_lead) AS submitted_at,
                   LEAST(v.changed_at - make_interval(secs => k.submitted_lead) + interval '20 minutes',
                         %(anchor)s::timestamptz - interval '2 minutes') AS flagged_at
        ) AS w
    """
    order_exprs = {
        "id": "p.id",
        "merchant_id": f"CASE WHEN ((p.id * 2246822519) %% 4294967296) %% 100 < {BIG_MERCHANT_SHARE} THEN m.ids[1] "
                       f"ELSE m.ids[(p.id %% {MERCHANTS - 1}) + 2] END",
        "reference": "'ORD-' || lpad(p.id::text, 9, '0')",
        "customer_name": "'Customer ' || p.id",
        "customer_email": "'customer' || (p.id %% 250000) || '@example.com'",
        "customer_phone": "'+86 138 ' || lpad((p.id %% 100000000)::text, 8, '0')",
        "shipping_address": "CASE WHEN k.conf_failures > 0 AND p.id %% 2 = 0 THEN '' "
                            "ELSE 'No. ' || (p.id %% 900 + 1) || ' Example Road, Shanghai' END",
        "amount": "v.amount",
        "currency": "'CNY'",
        "captured_amount": "CASE WHEN k.captured THEN v.amount ELSE 0 END",
        "status": "k.status",
        "submitted_at": "w.submitted_at",
        "status_changed_at": "v.changed_at",
        "updated_at": "v.changed_at",
        "stuck_since": "CASE WHEN k.flag <> '' THEN w.flagged_at END",
        "stuck_cause": "k.flag",
        "stuck_category": "k.flag_category",
        "needs_review": "k.needs_review",
        "resolved_at": "NULL::timestamptz",
        "receipt_number": "CASE WHEN k.status IN ('confirmed', 'refunded') THEN 'RC-BENCH-' || lpad(p.id::text, 9, '0') "
                          "ELSE '' END",
        "dispatch_number": "CASE WHEN k.status IN ('confirmed', 'refunded') THEN 'DN-BENCH-' || lpad(p.id::text, 9, '0') "
                           "ELSE '' END",
        "status_token": "md5('bench-token-' || p.id) || md5('bench-token2-' || p.id)",
        "sweep_due_at": """CASE k.sweep
            WHEN 'due' THEN %(anchor)s::timestamptz - interval '1 minute' - make_interval(secs => p.id %% 3600)
            WHEN 'revisit' THEN %(anchor)s::timestamptz + make_interval(secs => 1 + p.h2 %% 600)
            WHEN 'threshold' THEN v.changed_at + make_interval(secs => %(stuck)s)
            END""",
        "confirmation_failures": "k.conf_failures",
        "confirm_retry_at": "NULL::timestamptz",
    }
    step("orders", lambda: insert_select(Order, order_exprs, base, params))

    # Attempts: slot 0 is the newest attempt (id = 2 * order id), slot 1 an older one (2 * id + 1).
    def attempt_exprs(slot: int) -> dict[str, str]:
        a = f"k.a{slot}"
        created = "v.changed_at - make_interval(secs => k.attempt_lead)" + (" - interval '30 seconds'" if slot else "")
        open_ = f"({a}->>'status') IN ('initiated', 'pending', 'unknown')"
        n_checks = f"(CASE WHEN p.id %% ({a}->>'checks_every')::int = 0 THEN ({a}->>'n_checks')::int ELSE 0 END)"
        return {
            "id": f"2 * p.id + {slot}",
            "order_id": "p.id",
            "provider": f"'{PROVIDER}'",
            "provider_reference": f"'sbx_bench_' || (2 * p.id + {slot})",
            "idempotency_key": f"'bench-' || (2 * p.id + {slot})",
            "amount": "v.amount",
            "currency": "'CNY'",
            "status": f"{a}->>'status'",
            "failure_code": f"{a}->>'failure_code'",
            "action_required": f"CASE WHEN ({a}->>'action_every')::int > 0 AND p.id %% ({a}->>'action_every')::int = 0 "
                               "THEN '3ds' ELSE '' END",
            "created_at": created,
            "status_changed_at": f"CASE WHEN {open_} THEN {created} ELSE v.changed_at - interval '1 minute' END",
            # Far enough ahead that the re-check benchmark never claims the dataset's attempts;
            # the diagnosis only asks whether a check is scheduled at all.
            "next_check_at": f"CASE WHEN ({a}->>'next_check')::boolean THEN %(anchor)s::timestamptz + interval '30 days' END",
            "check_count": n_checks,
            "last_checked_at": f"CASE WHEN {n_checks} > 0 THEN {created} + make_interval(secs => 30 * {n_checks}) END",
            "last_error_code": f"CASE WHEN {n_checks} > 0 AND {a}->>'check_pattern' = 'timeout' THEN 'timeout' ELSE '' END",
            "last_error_message": "''",
            "last_raw_response": "NULL::jsonb",
        }
    for slot in (0, 1):
        step(f"attempts (slot {slot})",
             lambda slot=slot: insert_select(PaymentAttempt, attempt_exprs(slot), base + f" WHERE k.a{slot} IS NOT NULL",
                                             params))

    # Checks of the newest attempt: n_checks rows, 30 s apart, the pattern decides each answer.
    pattern = "k.a0->>'check_pattern'"
    last = "j = (k.a0->>'n_checks')::int"
    reported = (f"CASE {pattern} WHEN 'timeout' THEN '' WHEN 'pending' THEN 'pending' WHEN 'succeeded' THEN 'succeeded' "
                f"WHEN 'failed' THEN 'failed' WHEN 'pending_then_succeeded' THEN CASE WHEN {last} THEN 'succeeded' "
                f"ELSE 'pending' END WHEN 'pending_then_malformed' THEN CASE WHEN {last} THEN '' ELSE 'pending' END END")
    error = (f"CASE WHEN {pattern} = 'timeout' THEN 'timeout' "
             f"WHEN {pattern} = 'pending_then_malformed' AND {last} THEN 'malformed' ELSE 'none' END")
    check_exprs = {
        "attempt_id": "2 * p.id",
        "source": "'scheduled'",
        "reported_status": f"({reported})",
        "reported_amount": f"CASE WHEN ({error}) = 'none' THEN v.amount END",
        "reported_currency": f"CASE WHEN ({error}) = 'none' THEN 'CNY' ELSE '' END",
        "failure_code": f"CASE WHEN {pattern} = 'failed' THEN k.a0->>'failure_code' ELSE '' END",
        "action_required": "''",
        "error_kind": f"({error})",
        "error_message": f"CASE ({error}) WHEN 'timeout' THEN 'The provider did not answer in time (ReadTimeout).' "
                         f"WHEN 'malformed' THEN 'The provider''s answer is not valid JSON.' ELSE '' END",
        "http_status": f"CASE WHEN ({error}) = 'timeout' THEN NULL ELSE 200 END",
        "latency_ms": f"CASE WHEN ({error}) = 'timeout' THEN 5000 ELSE 40 + p.h2 %% 200 END",
        "response_excerpt": f"CASE WHEN ({error}) = 'none' THEN '{{\"status\": \"' || ({reported}) || '\"}}' ELSE '' END",
        "checked_at": "v.changed_at - make_interval(secs => k.attempt_lead) + make_interval(secs => 30 * j)",
    }
    step("checks", lambda: insert_select(
        PaymentCheck, check_exprs,
        base + " CROSS JOIN LATERAL generate_series(1, (k.a0->>'n_checks')::int) AS j "
               "WHERE k.a0 IS NOT NULL AND (k.a0->>'n_checks')::int > 0 AND p.id %% (k.a0->>'checks_every')::int = 0",
        params))

    # Signed callbacks for a share of the attempts.
    def callback_exprs(slot: int) -> dict[str, str]:
        return {
            "provider": f"'{PROVIDER}'",
            "event_id": f"'evt_bench_' || (2 * p.id + {slot})",
            "received_at": "v.changed_at - interval '1 minute'",
            "headers": "'{\"webhook-id\": \"masked\"}'::jsonb",
            "body": f"'{{\"type\": \"payment.' || (k.a{slot}->>'status') || '\", \"data\": {{\"provider_reference\": "
                    f"\"sbx_bench_' || (2 * p.id + {slot}) || '\"}}}}'",
            "signature_valid": "true",
            "attempt_id": f"2 * p.id + {slot}",
            "processed_at": "v.changed_at - interval '1 minute'",
            "outcome": "'applied'",
            "error": "''",
        }
    for slot in (0, 1):
        step(f"callbacks (slot {slot})", lambda slot=slot: insert_select(
            ProviderCallback, callback_exprs(slot),
            base + f" WHERE k.a{slot} IS NOT NULL AND p.id %% 10 < (k.a{slot}->>'callback_share')::int", params))

    # The timeline: created for every order, one status change for orders with an attempt,
    # the flag, and confirmation failures (with validation errors on every second order).
    event = {
        "actor_kind": "'system'",
        "actor_user_id": "NULL::integer",
        "attempt_id": "NULL::bigint",
        "order_id": "p.id",
    }
    step("events (created)", lambda: insert_select(OrderEvent, {
        **event, "kind": "'created'", "message": "'Order submitted.'",
        "data": "jsonb_build_object('amount', v.amount::text, 'currency', 'CNY')",
        "created_at": "w.submitted_at",
    }, base, params))
    step("events (status)", lambda: insert_select(OrderEvent, {
        **event, "kind": "'status_changed'", "message": "'Provider reported a result.'",
        "data": "jsonb_build_object('from', 'payment_pending', 'to', k.status)", "created_at": "v.changed_at",
    }, base + " WHERE k.a0 IS NOT NULL", params))
    step("events (flagged)", lambda: insert_select(OrderEvent, {
        **event, "kind": "'flagged'", "message": "'Flagged as unreturned.'",
        "data": "jsonb_build_object('cause', k.flag, 'previous_cause', '')",
        "created_at": "w.flagged_at",
    }, base + " WHERE k.flag <> ''", params))
    step("events (confirmation)", lambda: insert_select(OrderEvent, {
        **event, "kind": "'confirmation_failed'",
        "message": "CASE WHEN p.id %% 2 = 0 THEN 'Confirmation is blocked by the customer''s data.' "
                   "ELSE 'Confirmation failed: TimeoutError: fulfilment service timed out' END",
        "data": "CASE WHEN p.id %% 2 = 0 THEN jsonb_build_object('error', 'Confirmation is blocked by the customer''s "
                "data.', 'validation', jsonb_build_object('shipping_address', 'The shipping address is empty.'), "
                "'failures', j) ELSE jsonb_build_object('error', 'TimeoutError: fulfilment service timed out', "
                "'retry_at', NULL, 'failures', j) END",
        "created_at": "v.changed_at + make_interval(secs => 60 * j)",
    }, base + " CROSS JOIN LATERAL generate_series(1, k.conf_failures) AS j WHERE k.conf_failures > 0", params))

    _exec("SET session_replication_role = DEFAULT")
    _exec("SET synchronous_commit = DEFAULT")
    # Identity sequences continue after the ids we chose.
    for model in (Order, PaymentAttempt, PaymentCheck, ProviderCallback, OrderEvent):
        table = model._meta.db_table
        _exec(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))")
    step("verify", lambda: verify() or "ok")
    def vacuum() -> str:
        for table in TABLES:
            _exec(f"VACUUM ANALYZE {table}")
        return "done"
    step("vacuum analyze", vacuum)

    # What the sweep benchmark restores between runs.
    _exec("""CREATE TABLE bench_sweep_snapshot AS
             SELECT id, stuck_since, stuck_cause, stuck_category, needs_review, resolved_at, sweep_due_at
             FROM orders_order WHERE sweep_due_at <= %s""", [anchor])
    _exec("ALTER TABLE bench_sweep_snapshot ADD PRIMARY KEY (id)")
    _exec("DROP TABLE bench_kind, bench_plan")

    counts = _table_counts()
    baseline = {t: _rows(f"SELECT COALESCE(max(id), 0) FROM {t}")[0][0] for t in TABLES}
    seconds = time.monotonic() - started
    _set_meta("dataset", {"fingerprint": fp, "anchor": anchor.isoformat(), "orders": orders, "due": due,
                          "baseline": baseline, "counts": counts, "seconds": seconds,
                          "generated_at": timezone.now().isoformat(timespec="seconds")})
    log("dataset: " + ", ".join(f"{t.removeprefix('orders_')} {n:,}" for t, n in counts.items())
        + f" in {seconds:.0f} s")
    return Dataset(orders=orders, due=due, anchor=anchor, baseline=baseline, counts=counts, seconds=seconds)


def verify() -> None:
    """The references the generator wrote with foreign-key triggers off all resolve."""
    checks = {
        "order -> merchant": "SELECT count(*) FROM orders_order o LEFT JOIN orders_merchant m ON m.id = o.merchant_id "
                             "WHERE m.id IS NULL",
        "attempt -> order": "SELECT count(*) FROM orders_paymentattempt a LEFT JOIN orders_order o ON o.id = a.order_id "
                            "WHERE o.id IS NULL",
        "check -> attempt": "SELECT count(*) FROM orders_paymentcheck c LEFT JOIN orders_paymentattempt a "
                            "ON a.id = c.attempt_id WHERE a.id IS NULL",
        "callback -> attempt": "SELECT count(*) FROM orders_providercallback c LEFT JOIN orders_paymentattempt a "
                               "ON a.id = c.attempt_id WHERE c.attempt_id IS NOT NULL AND a.id IS NULL",
        "event -> order": "SELECT count(*) FROM orders_orderevent e LEFT JOIN orders_order o ON o.id = e.order_id "
                          "WHERE o.id IS NULL",
    }
    broken = {name: n for name, sql in checks.items() if (n := _rows(sql)[0][0])}
    if broken:
        raise RuntimeError(f"dataset has dangling references: {broken}")
