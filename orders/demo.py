"""Demo data: merchants, people and a week of orders that shows every status and every cause.

The generator writes historical rows in bulk and does not go through `orders.services`:
replaying a week of business one locked transition at a time would take far too long for
100,000 orders. To stay honest it builds each order as a small story whose every move is
checked against the transition tables in `orders.states`, so the rows look exactly as if
the services had written them (one `OrderEvent` per move, flags with cause and category,
checks and callbacks that are the evidence for each cause). Use it for demo databases only.

Everything that matters is derived from one `random.Random(seed)` and offsets from one
"now" anchor, so the same seed yields the same references, amounts, statuses and causes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from itertools import accumulate
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from orders.causes import CAUSE_CATEGORY, Cause
from orders.currencies import MINOR_UNITS
from orders.models import (
    CallbackOutcome,
    CheckErrorKind,
    CheckSource,
    EventActorKind,
    EventKind,
    Merchant,
    MerchantMembership,
    MembershipRole,
    Order,
    OrderEvent,
    PaymentAttempt,
    PaymentCheck,
    ProviderCallback,
)
from orders.states import ATTEMPT_FINAL, AttemptStatus, OrderStatus, attempt_move_allowed, order_move_allowed

A = AttemptStatus
O = OrderStatus
Kind = EventKind
Actor = EventActorKind

DEFAULT_ORDERS = 2000
DEFAULT_SEED = 20240611
CHUNK_SIZE = 1000
DAY = 86_400
HOUR = 3_600
MINUTE = 60


# --- people ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoLogin:
    username: str
    description: Promise
    is_staff: bool = False
    is_superuser: bool = False
    group: str = ""  # a staff group from backoffice.roles (named here: orders must not import backoffice)
    membership_role: str = ""  # a role on the first demo merchant
    other_memberships: tuple[tuple[str, str], ...] = ()  # (merchant code, role) beyond the first merchant

    @property
    def password(self) -> str:
        # Printed on screen for anyone to use: these accounts belong in demo databases only.
        return f"{self.username}-demo"

    def describe(self) -> str:
        return str(self.description)


DEMO_LOGINS: tuple[DemoLogin, ...] = (
    DemoLogin("admin", gettext_lazy("superuser"), is_staff=True, is_superuser=True),
    DemoLogin("agent", gettext_lazy("staff: support agent"), is_staff=True, group="Support agent"),
    DemoLogin("lead", gettext_lazy("staff: support lead"), is_staff=True, group="Support lead"),
    DemoLogin(
        "manager", gettext_lazy("merchant manager (Jade Leaf Tea House)"), membership_role=MembershipRole.MANAGER
    ),
    DemoLogin(
        "operator", gettext_lazy("merchant operator (Jade Leaf Tea House)"), membership_role=MembershipRole.OPERATOR
    ),
    DemoLogin("viewer", gettext_lazy("merchant viewer (Jade Leaf Tea House)"), membership_role=MembershipRole.VIEWER),
    # Belongs to two merchants, with a different role at each: the portal's merchant switcher.
    DemoLogin(
        "partner", gettext_lazy("merchant operator (Jade Leaf Tea House) and manager (Panda Mart)"),
        membership_role=MembershipRole.OPERATOR, other_memberships=(("panda-mart", MembershipRole.MANAGER),),
    ),
)


# --- merchants ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoMerchant:
    code: str
    name: str
    currency: str
    stuck_after: timedelta
    escalate_after: timedelta
    expire_after: timedelta
    share: float  # of all orders
    price_range: tuple[int, int]  # whole currency units
    providers: tuple[tuple[str, float], ...]
    reference_format: str
    foreign_customers: float  # share of customers from the other locale


DEMO_MERCHANTS: tuple[DemoMerchant, ...] = (
    # The first merchant is the one the demo merchant users belong to.
    DemoMerchant(
        "jade-leaf-tea", "翠叶茶庄 Jade Leaf Tea House", "CNY",
        timedelta(minutes=15), timedelta(hours=2), timedelta(hours=24), 0.28, (38, 2888),
        (("alipay", 0.5), ("wechatpay", 0.38), ("unionpay", 0.06), ("jdpay", 0.06)), "JLT{:08d}", 0.08,
    ),
    DemoMerchant(
        "panda-mart", "熊猫优选 Panda Mart", "CNY",
        timedelta(minutes=10), timedelta(hours=1), timedelta(hours=12), 0.36, (9, 899),
        (("wechatpay", 0.55), ("alipay", 0.33), ("jdpay", 0.12)), "PM-{:09d}", 0.03,
    ),
    DemoMerchant(
        "lotus-travel", "莲花旅行 Lotus Travel", "CNY",
        timedelta(minutes=30), timedelta(hours=4), timedelta(hours=48), 0.1, (399, 12800),
        (("unionpay", 0.45), ("alipay", 0.35), ("jdpay", 0.2)), "LT{:07d}", 0.15,
    ),
    DemoMerchant(
        "silk-road-books", "丝路书局 Silk Road Books", "CNY",
        timedelta(minutes=20), timedelta(hours=3), timedelta(hours=24), 0.12, (19, 399),
        (("alipay", 0.5), ("wechatpay", 0.4), ("jdpay", 0.1)), "SRB-{:07d}", 0.1,
    ),
    DemoMerchant(
        "harbor-outfitters", "Harbor Outfitters", "USD",
        timedelta(minutes=5), timedelta(minutes=45), timedelta(hours=6), 0.14, (12, 480),
        (("stripe", 0.6), ("paypal", 0.3), ("jdpay", 0.1)), "HO-{:06d}", 0.06,
    ),
)
OUTAGE_PROVIDER = "jdpay"
_THREE_DS_PROVIDERS = frozenset({"unionpay", "stripe", "paypal"})
_DECLINE_CODES = ("insufficient_funds", "do_not_honor", "card_declined", "expired_card", "risk_rejected",
                  "exceeds_limit")
_PROCESSING_ERRORS = (
    "ReceiptService: HTTP 500 from /invoices",
    "Timeout after 30s while reserving stock in the warehouse system",
    "IntegrityError: duplicate key value violates unique constraint \"dispatch_note_number\"",
    "ERP connector: session expired, login rejected",
    "KeyError: 'tax_region' while building the receipt",
)


# --- what happens to each order -------------------------------------------------------------

HEALTHY = "healthy"
RETRY_THEN_PAID = "retry_then_paid"
REFUNDED = "refunded"
CANCELLED_UNPAID = "cancelled_unpaid"
CANCELLED_PENDING = "cancelled_pending"
EXPIRED_UNPAID = "expired_unpaid"
EXPIRED_PENDING = "expired_pending"
RECENT_SUBMITTED = "recent_submitted"
RECENT_PENDING = "recent_pending"
RECENT_PAID = "recent_paid"

# label -> (share of orders, minimum count); healthy orders take what is left.
_PLAN: dict[str, tuple[float, int]] = {
    RETRY_THEN_PAID: (0.02, 1),
    REFUNDED: (0.03, 1),
    CANCELLED_UNPAID: (0.02, 1),
    CANCELLED_PENDING: (0.01, 1),
    EXPIRED_UNPAID: (0.02, 1),
    EXPIRED_PENDING: (0.01, 1),
    RECENT_SUBMITTED: (0.01, 1),
    RECENT_PENDING: (0.015, 1),
    RECENT_PAID: (0.005, 1),
    Cause.NO_PAYMENT_STARTED: (0.02, 3),
    Cause.AWAITING_CUSTOMER_ACTION: (0.02, 3),
    Cause.PAYMENT_DECLINED: (0.02, 3),
    Cause.INVALID_CUSTOMER_DATA: (0.01, 3),
    Cause.RESULT_UNKNOWN: (0.02, 3),
    Cause.PROVIDER_UNREACHABLE: (0.015, 3),
    Cause.CALLBACK_LOST: (0.01, 3),
    Cause.AMOUNT_MISMATCH: (0.005, 3),
    Cause.DUPLICATE_PAYMENT: (0.005, 3),
    Cause.PROCESSING_ERROR: (0.01, 3),
    Cause.NO_ACCESS: (0.003, 3),
}
# A provider outage is many failing attempts of one provider in a short window. It is still
# going on at "now", as orders.evidence.detect_outage_providers looks at the last ten minutes
# (20 failing attempts at least): evenly spread, 60 attempts over 25 minutes put 24 in every
# ten minutes, and those older than their merchant's threshold are flagged.
OUTAGE_MIN_ORDERS = 60
OUTAGE_DURATION = 25 * MINUTE
OUTAGE_MAX_STUCK_AFTER = timedelta(minutes=15)

# Re-checks happen at these offsets from an attempt's start, following the default re-check
# policy's delays (pending and unknown attempts have separate lists); when a list runs out,
# after about 31 hours, the order needs a person.
_PENDING_DELAYS = (60, 300, 900, HOUR, 6 * HOUR, DAY)
_UNKNOWN_DELAYS = (30, 60, 300, 900, HOUR, 6 * HOUR, DAY)
_CHECK_OFFSETS = {
    A.PENDING: tuple(accumulate(_PENDING_DELAYS)),
    A.UNKNOWN: tuple(accumulate(_UNKNOWN_DELAYS)),
}


def outage_size(orders: int) -> int:
    return max(OUTAGE_MIN_ORDERS, orders // 1000)


def _story_counts(orders: int) -> dict[str, int]:
    counts = {label: max(minimum, round(share * orders)) for label, (share, minimum) in _PLAN.items()}
    counts[Cause.PROVIDER_OUTAGE] = outage_size(orders)
    counts[HEALTHY] = orders - sum(counts.values())
    return counts


def _smallest_plannable() -> int:
    """The smallest count from which every larger one leaves room for healthy orders (the
    shares round up on small counts, so the sum of the minimums is not enough)."""
    start = sum(minimum for _share, minimum in _PLAN.values()) + OUTAGE_MIN_ORDERS + 1
    last_bad = max((n for n in range(start, start * 20) if _story_counts(n)[HEALTHY] < 1), default=start - 1)
    return last_bad + 1


MIN_ORDERS = _smallest_plannable()


def plan_counts(orders: int) -> dict[str, int]:
    """How many orders follow each story; every status and every cause appears at least once."""
    if orders < MIN_ORDERS:
        raise ValueError(orders)
    counts = _story_counts(orders)
    if counts[HEALTHY] < 1:
        raise ValueError(orders)
    return counts


# --- the result -----------------------------------------------------------------------------


@dataclass
class SeedResult:
    created: bool
    merchants: int = 0
    users: int = 0
    orders: int = 0
    attempts: int = 0
    checks: int = 0
    callbacks: int = 0
    events: int = 0
    statuses: Counter = field(default_factory=Counter)
    causes: Counter = field(default_factory=Counter)


# --- accounts and merchants -----------------------------------------------------------------


def ensure_demo_merchants(*, now: datetime) -> list[Merchant]:
    merchants = []
    for spec in DEMO_MERCHANTS:
        merchant, _created = Merchant.objects.get_or_create(
            code=spec.code,
            defaults={
                "name": spec.name,
                "default_currency": spec.currency,
                "stuck_after": spec.stuck_after,
                "escalate_after": spec.escalate_after,
                "expire_after": spec.expire_after,
                "created_at": now - timedelta(days=90),
            },
        )
        merchants.append(merchant)
    return merchants


def ensure_demo_users(*, merchant: Merchant) -> dict[str, Any]:
    """Create (or reset) the demo logins so the passwords printed on screen always work."""
    User = get_user_model()
    users: dict[str, Any] = {}
    for login in DEMO_LOGINS:
        user, _created = User.objects.get_or_create(
            username=login.username, defaults={"email": f"{login.username}@demo.example.com"}
        )
        user.is_staff = login.is_staff
        user.is_superuser = login.is_superuser
        user.is_active = True
        user.set_password(login.password)
        user.save()
        if login.group:
            # backoffice.roles creates the groups after migrate; a bare test database may not have run it.
            group, _created = Group.objects.get_or_create(name=login.group)
            user.groups.add(group)
        if login.membership_role:
            MerchantMembership.objects.update_or_create(
                user=user, merchant=merchant, defaults={"role": login.membership_role}
            )
        for code, role in login.other_memberships:
            other = Merchant.objects.filter(code=code).first()
            if other is not None:
                MerchantMembership.objects.update_or_create(user=user, merchant=other, defaults={"role": role})
        users[login.username] = user
    return users


def demo_orders_exist() -> bool:
    return Order.objects.filter(merchant__code__in=[spec.code for spec in DEMO_MERCHANTS]).exists()


# --- customers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customer:
    name: str
    email: str
    phone: str
    address: str


def _customer_pool(faker_locale: str, seed: int, size: int) -> list[_Customer]:
    from faker import Faker

    fake = Faker(faker_locale)
    fake.seed_instance(seed)
    # safe_email: demo customers must never receive real mail.
    return [_Customer(fake.name(), fake.safe_email(), fake.phone_number(), fake.address()) for _ in range(size)]


# Orders the unreturned sweep diagnoses: payment_failed still waits for the customer.
_SWEPT_STATUSES = frozenset({O.SUBMITTED, O.PAYMENT_PENDING, O.PAID, O.PAYMENT_FAILED})
_INVALID_PHONES = ("1380013", "12345", "000-0000", "+86 1", "n/a", "")
_INVALID_ADDRESSES = ("", "待定", "-", "同上", "TBD")


# --- rows ---------------------------------------------------------------------------------


class _Row:
    """A row to insert, with attribute access for the stories. Model instances cost several
    times more to build, and a run builds close to a million rows. Attributes that are not
    columns of the model are ignored when the row is written."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


class _AttemptRow(_Row):
    def __init__(self, **values: Any) -> None:
        super().__init__(
            next_check_at=None, check_count=0, last_checked_at=None, last_error_code="", last_error_message="",
            last_raw_response=None, failure_code="", action_required="", **values,
        )


def _new_order(**values: Any) -> _Row:
    return _Row(
        stuck_since=None, stuck_cause="", stuck_category="", needs_review=False, resolved_at=None,
        captured_amount=Decimal("0"), receipt_number="", dispatch_number="", **values,
    )


class _Table:
    """Inserts rows of one model with executemany, ids reserved up front.

    bulk_create spends most of its time preparing each value through the SQL compiler;
    here each column gets one converter from the backend's own adapters, and columns a
    row does not mention get the model field's default, so fields added later still work.
    Foreign keys to other demo rows are given as the row object (`refs`: column -> attribute).
    Only tables whose rows are pointed at get their ids reserved (`with_pk`); the others let
    the database number them.
    """

    def __init__(self, model: type[models.Model], *, refs: dict[str, str] | None = None,
                 with_pk: bool = False) -> None:
        refs = refs or {}
        self.model = model
        self.fields = [f for f in model._meta.concrete_fields if with_pk or not f.primary_key]
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        columns = ", ".join(quote(f.column) for f in self.fields)
        self.sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(self.fields))})"
        self.copy_sql = f"COPY {table} ({columns}) FROM STDIN"
        self.getters: list[Callable[[dict[str, Any]], Any]] = [self._getter(f, refs) for f in self.fields]

    @staticmethod
    def _getter(f: models.Field, refs: dict[str, str]) -> Callable[[dict[str, Any]], Any]:
        ops = connection.ops
        name = f.attname
        if name in refs:
            key = refs[name]
            return lambda row: row[key].id if row.get(key) is not None else None
        internal = f.get_internal_type()
        if internal == "DateTimeField":
            convert: Callable[[Any], Any] = ops.adapt_datetimefield_value
        elif internal == "DecimalField":
            convert = lambda value: ops.adapt_decimalfield_value(value, f.max_digits, f.decimal_places)  # noqa: E731
        elif internal == "JSONField":
            convert = lambda value: f.get_db_prep_save(value, connection)  # noqa: E731
        else:
            convert = lambda value: value  # noqa: E731
        missing = object()

        def get(row: dict[str, Any]) -> Any:
            value = row.get(name, missing)
            return convert(f.get_default() if value is missing else value)

        return get

    def insert(self, rows: list[_Row]) -> None:
        if not rows:
            return
        getters = self.getters
        params = [tuple(get(row.__dict__) for get in getters) for row in rows]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # One INSERT per row costs a server round of parse and plan each; COPY streams them.
                with cursor.cursor.copy(self.copy_sql) as copy:
                    for values in params:
                        copy.write_row(values)
            else:
                cursor.executemany(self.sql, params)


def _reserve_ids(model: type[models.Model], count: int) -> list[int]:
    """Primary keys for `count` new rows, so children can point at parents without RETURNING."""
    if count == 0:
        return []
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                           [table, count])
            return [row[0] for row in cursor.fetchall()]
        if connection.vendor != "sqlite":
            raise NotImplementedError(connection.vendor)
        # Inside the chunk's write transaction (SQLite allows one writer), so nobody else can
        # take these ids; AUTOINCREMENT's own counter is honoured so deleted ids are not reused.
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {connection.ops.quote_name(table)}")
        highest = cursor.fetchone()[0]
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
        row = cursor.fetchone()
        start = max(highest, row[0] if row else 0) + 1
        return list(range(start, start + count))


# --- the story of one order -----------------------------------------------------------------


class _Messages:
    """Event texts, translated once per run instead of once per event."""

    def __init__(self, providers: set[str]) -> None:
        self.created = _("Order submitted.")
        self.attempt_started = {p: _("Payment attempt started at %(provider)s.") % {"provider": p} for p in providers}
        self.attempt_started_reason = _("A payment attempt was started.")
        self.provider_succeeded = _("The provider reported the payment as succeeded.")
        self.provider_failed = _("The provider declined the payment.")
        self.provider_timeout = _("The provider did not answer in time; the outcome is unknown.")
        self.paid = _("Payment received.")
        self.confirmed = _("Receipt and dispatch note issued.")
        self.customer_cancelled = _("The customer cancelled the order.")
        self.attempt_cancelled = _("The customer closed the payment page.")
        self.expired = _("No payment within the merchant's expiry time.")
        self.attempt_expired = _("The provider expired the unpaid payment.")
        self.refunded = _("Refunded at the customer's request.")
        self.flagged = _("Flagged as unreturned.")
        self.review = _("A person needs to review this order.")
        self.confirmation_failed = _("Confirmation failed.")
        self.validation_failed = _("Confirmation blocked: the customer data is invalid.")
        self.reported_missing = _("A merchant user reported that this order is missing from their order list.")


@dataclass
class _Context:
    rng: random.Random
    now: datetime
    messages: _Messages
    users: dict[str, Any]
    first_merchant_code: str
    seen_event_ids: set[str] = field(default_factory=set)


class _Story:
    """One order and every row that belongs to it, built in time order.

    Moves are checked against the transition tables, so a seeding bug shows up as an
    AssertionError instead of data the services could never have produced.
    """

    def __init__(self, ctx: _Context, order: _Row, spec: DemoMerchant) -> None:
        self.ctx = ctx
        self.rng = ctx.rng
        self.order = order
        self.spec = spec
        self.attempts: list[_AttemptRow] = []
        self.checks: list[_Row] = []
        self.callbacks: list[_Row] = []
        self.events: list[_Row] = []
        # (event data, attempt): the attempt's id is only known once attempts are inserted.
        self.attempt_ids: list[tuple[dict[str, Any], _AttemptRow]] = []
        self.stuck_after = int(spec.stuck_after.total_seconds())
        self.expire_after = int(spec.expire_after.total_seconds())

    # time
    def later(self, at: datetime, low: float, high: float) -> datetime:
        return at + timedelta(milliseconds=self.rng.randint(int(low * 1000), int(high * 1000)))

    # timeline
    def event(
        self,
        kind: str,
        at: datetime,
        *,
        actor: str = Actor.SYSTEM,
        label: str = "",
        user: Any = None,
        message: str = "",
        data: dict[str, Any] | None = None,
        attempt: _AttemptRow | None = None,
    ) -> None:
        payload = dict(data or {})
        if label:
            payload.setdefault("actor_label", label)
        if isinstance(payload.get("attempt_id"), _AttemptRow):
            self.attempt_ids.append((payload, payload["attempt_id"]))
        self.events.append(
            _Row(
                order=self.order, attempt=attempt, kind=kind, actor_kind=actor,
                actor_user_id=user.pk if user is not None else None, message=message, data=payload, created_at=at,
            )
        )

    def move(
        self,
        to: str,
        at: datetime,
        *,
        actor: str = Actor.SYSTEM,
        label: str = "",
        user: Any = None,
        reason: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        order = self.order
        assert order_move_allowed(order.status, to), (order.status, to)
        payload = {"from": order.status, "to": to, **(data or {})}
        if to in (O.CONFIRMED, O.CANCELLED, O.EXPIRED, O.REFUNDED) and order.stuck_since is not None:
            # Mirrors services._move_order: a final outcome resolves the flag.
            order.stuck_since, order.stuck_cause, order.stuck_category = None, "", ""
            order.needs_review = False
            order.resolved_at = at
            payload["resolved_unreturned"] = True
        order.status = to
        order.status_changed_at = at
        self.event(Kind.STATUS_CHANGED, at, actor=actor, label=label, user=user, message=reason, data=payload)

    def flag(self, cause: str, since: datetime, *, needs_review: bool = False) -> None:
        assert since <= self.ctx.now, (cause, since, self.ctx.now)
        order = self.order
        order.stuck_since = since
        category = str(CAUSE_CATEGORY[cause])
        order.stuck_cause = str(cause)
        order.stuck_category = category
        self.event(Kind.FLAGGED, since, message=self.ctx.messages.flagged,
                   data={"cause": str(cause), "category": category})
        if needs_review:
            order.needs_review = True
            self.event(Kind.REVIEW_REQUESTED, since, message=self.ctx.messages.review, data={"cause": str(cause)})

    # payments
    def provider_reference(self, provider: str) -> str:
        rng = self.rng
        if provider == "alipay":
            return f"2{rng.randrange(10**26, 10**27):027d}"
        if provider == "wechatpay":
            return f"42000{rng.randrange(10**22, 10**23):023d}"
        if provider == "unionpay":
            return f"{rng.randrange(10**20, 10**21):021d}"
        if provider == "stripe":
            return "pi_" + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=24))
        if provider == "paypal":
            return "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXY0123456789", k=17))
        return f"sbx_{rng.getrandbits(80):020x}"

    def pick_provider(self, *, avoid_outage: bool = False) -> str:
        # Causes that wait on the provider would read as the outage if they used its provider.
        providers = [p for p in self.spec.providers if not (avoid_outage and p[0] == OUTAGE_PROVIDER)]
        names, weights = zip(*providers)
        return self.rng.choices(names, weights)[0]

    def start_attempt(self, at: datetime, *, provider: str | None = None, status: str = A.PENDING,
                      with_reference: bool = True, avoid_outage: bool = False) -> _AttemptRow:
        """Mirrors services.create_payment_attempt."""
        order = self.order
        assert order.status in (O.SUBMITTED, O.PAYMENT_PENDING, O.PAYMENT_FAILED), order.status
        provider = provider or self.pick_provider(avoid_outage=avoid_outage)
        attempt = _AttemptRow(
            order=order,
            provider=provider,
            provider_reference=self.provider_reference(provider) if with_reference else "",
            idempotency_key=f"{self.rng.getrandbits(128):032x}",
            amount=order.amount,
            currency=order.currency,
            status=status,
            created_at=at,
            status_changed_at=at,
        )
        self.attempts.append(attempt)
        self.event(Kind.ATTEMPT_CREATED, at, actor=Actor.SYSTEM, attempt=attempt,
                   message=self.ctx.messages.attempt_started[provider],
                   data={"attempt_id": attempt, "provider": provider, "status": status})
        if order.status != O.PAYMENT_PENDING:
            self.move(O.PAYMENT_PENDING, at, reason=self.ctx.messages.attempt_started_reason,
                      data={"attempt_id": attempt})
        return attempt

    def attempt_move(self, attempt: _AttemptRow, to: str, at: datetime, *, reason: str,
                     actor: str = Actor.PROVIDER, failure_code: str = "", action_required: str | None = None,
                     data: dict[str, Any] | None = None) -> None:
        """Mirrors services.transition_attempt."""
        assert attempt_move_allowed(attempt.status, to), (attempt.status, to)
        current = attempt.status
        attempt.status = to
        attempt.status_changed_at = at
        if failure_code:
            attempt.failure_code = failure_code
        if action_required is not None:
            attempt.action_required = action_required
        if to in ATTEMPT_FINAL:
            attempt.next_check_at = None
        label = attempt.provider if actor == Actor.PROVIDER else ""
        self.event(Kind.ATTEMPT_STATUS_CHANGED, at, actor=actor, label=label, attempt=attempt, message=reason,
                   data={"attempt_id": attempt, "from": current, "to": to, **(data or {})})

    def check(self, attempt: _AttemptRow, at: datetime, *, source: str = CheckSource.SCHEDULED,
              status: str = "", amount: Decimal | None = None, currency: str = "", failure_code: str = "",
              action_required: str = "", error: str = CheckErrorKind.NONE, http_status: int | None = None) -> None:
        rng = self.rng
        if error == CheckErrorKind.NONE:
            reported_amount = attempt.amount if amount is None else amount
            reported_currency = currency or attempt.currency
            raw = {"status": status, "amount": str(reported_amount), "currency": reported_currency}
            if attempt.provider_reference:
                raw["id"] = attempt.provider_reference
            if failure_code:
                raw["failure_code"] = failure_code
            if action_required:
                raw["next_action"] = action_required
            latency = rng.randint(60, 900)
            message = ""
            http_status = http_status or 200
        else:
            reported_amount, reported_currency, raw = None, "", None
            if error == CheckErrorKind.TIMEOUT:
                latency, message, http_status = 10_000 + rng.randint(0, 40), "Read timed out after 10s", None
            elif error == CheckErrorKind.NOT_FOUND:
                latency, message, http_status = rng.randint(40, 400), "Payment not found", 404
            elif error == CheckErrorKind.CONNECTION:
                latency = rng.randint(3, 3_000)
                message = rng.choice(("Connection refused", "Connection reset by peer",
                                      "Name or service not known", "TLS handshake failed"))
                http_status = None
            else:
                http_status = http_status or rng.choice((500, 502, 503, 504))
                latency = rng.randint(30, 2_500)
                message = {500: "500 Internal Server Error", 502: "502 Bad Gateway",
                           503: "503 Service Unavailable", 504: "504 Gateway Timeout"}.get(http_status, "HTTP error")
        self.checks.append(
            _Row(
                attempt=attempt, source=source, reported_status=status if error == CheckErrorKind.NONE else "",
                reported_amount=reported_amount, reported_currency=reported_currency, failure_code=failure_code,
                action_required=action_required, error_kind=error, error_message=message,
                http_status=http_status, latency_ms=latency,
                response_excerpt=json.dumps(raw, ensure_ascii=False) if raw else "", checked_at=at,
            )
        )
        attempt.check_count += 1
        attempt.last_checked_at = at
        attempt.last_error_code = "" if error == CheckErrorKind.NONE else str(error)
        attempt.last_error_message = message
        attempt.last_raw_response = raw

    def callback(self, attempt: _AttemptRow | None, at: datetime, *, kind: str = "payment.succeeded",
                 provider: str | None = None, valid: bool = True, outcome: str = CallbackOutcome.APPLIED,
                 error: str = "", failure_code: str = "") -> None:
        rng = self.rng
        provider = provider or attempt.provider
        event_id = f"msg_{rng.getrandbits(96):024x}"
        while event_id in self.ctx.seen_event_ids:  # (provider, event_id) is unique; 96 bits nearly never collide
            event_id = f"msg_{rng.getrandbits(96):024x}"
        self.ctx.seen_event_ids.add(event_id)
        body: dict[str, Any] = {"type": kind, "data": {
            "id": attempt.provider_reference if attempt else "", "merchant_order": self.order.reference,
            "amount": str(self.order.amount), "currency": self.order.currency}}
        if failure_code:
            body["data"]["failure_code"] = failure_code
        self.callbacks.append(
            _Row(
                provider=provider, event_id=event_id, received_at=at,
                headers={"webhook-id": event_id, "webhook-timestamp": str(int(at.timestamp())),
                         "webhook-signature": "v1,****", "content-type": "application/json"},
                body=json.dumps(body, ensure_ascii=False), signature_valid=valid, attempt=attempt,
                processed_at=self.later(at, 0.02, 0.4), outcome=outcome, error=error,
            )
        )

    def pay(self, attempt: _AttemptRow, at: datetime, *, via: str = "callback") -> datetime:
        """The provider says succeeded and the order becomes paid: by callback, re-check or both."""
        messages = self.ctx.messages
        if via == "callback":
            self.callback(attempt, at)
        elif via == "rejected_callback":
            # A callback with a bad signature is only a hint: it triggers a re-check.
            self.callback(attempt, at, valid=False, outcome=CallbackOutcome.REJECTED,
                          error="No matching signature for webhook-signature")
            at = self.later(at, 0.2, 2)
            self.check(attempt, at, source=CheckSource.CALLBACK, status=A.SUCCEEDED)
        else:
            self.check(attempt, at, status=A.SUCCEEDED)
        self.attempt_move(attempt, A.SUCCEEDED, at, reason=messages.provider_succeeded)
        self.order.captured_amount = attempt.amount
        self.move(O.PAID, at, actor=Actor.PROVIDER, label=attempt.provider, reason=messages.paid,
                  data={"attempt_id": attempt, "provider_reference": attempt.provider_reference})
        return at

    def confirm(self, at: datetime) -> None:
        order = self.order
        order.receipt_number = f"R{order.reference[-10:]}"
        order.dispatch_number = f"D{order.reference[-10:]}"
        self.move(O.CONFIRMED, at, reason=self.ctx.messages.confirmed)

    def open_checks(self, attempt: _AttemptRow, *, answer: Callable[[int, int], dict[str, Any]]) -> bool:
        """Scheduled re-checks of an open attempt from its start until now.

        `answer(index, total)` gives the keyword arguments of each check. Returns True when
        the schedule is used up, which is when the order is handed to a person.
        """
        start = attempt.created_at
        age = (self.ctx.now - start).total_seconds()
        offsets = _CHECK_OFFSETS[A.UNKNOWN if attempt.status == A.UNKNOWN else A.PENDING]
        due = [offset for offset in offsets if offset < age - 5]
        for index, offset in enumerate(due):
            self.check(attempt, start + timedelta(seconds=offset, milliseconds=self.rng.randint(0, 4000)),
                       **answer(index, len(due)))
        remaining = offsets[len(due):]
        attempt.next_check_at = start + timedelta(seconds=remaining[0]) if remaining else None
        return not remaining


# --- the stories ----------------------------------------------------------------------------


def _healthy(st: _Story, t0: datetime, *, confirm: bool = True) -> datetime:
    rng = st.rng
    attempt = st.start_attempt(st.later(t0, 5, 240))
    paid_at = st.later(attempt.created_at, 15, 300)
    if paid_at - attempt.created_at > timedelta(seconds=60) and rng.random() < 0.4:
        st.check(attempt, attempt.created_at + timedelta(seconds=60), status=A.PENDING)
    roll = rng.random()
    via = "rejected_callback" if roll < 0.02 else "check" if roll < 0.05 else "callback"
    paid_at = st.pay(attempt, paid_at, via=via)
    if via == "callback" and rng.random() < 0.04:
        # A redelivery under a new event id changes nothing.
        st.callback(attempt, st.later(paid_at, 5, 120), outcome=CallbackOutcome.NO_CHANGE)
    if not confirm:
        return paid_at
    confirmed_at = st.later(paid_at, 1, 40)
    st.confirm(confirmed_at)
    return confirmed_at


def _retry_then_paid(st: _Story, t0: datetime) -> None:
    messages = st.ctx.messages
    first = st.start_attempt(st.later(t0, 5, 120))
    failed_at = st.later(first.created_at, 10, 180)
    code = st.rng.choice(_DECLINE_CODES)
    st.callback(first, failed_at, kind="payment.failed", failure_code=code)
    st.attempt_move(first, A.FAILED, failed_at, reason=messages.provider_failed, failure_code=code)
    st.move(O.PAYMENT_FAILED, failed_at, actor=Actor.PROVIDER, label=first.provider, reason=messages.provider_failed,
            data={"attempt_id": first, "failure_code": code})
    second = st.start_attempt(st.later(failed_at, 30, 600))
    paid_at = st.pay(second, st.later(second.created_at, 15, 200))
    st.confirm(st.later(paid_at, 1, 40))


def _refunded(st: _Story, t0: datetime) -> None:
    confirmed_at = _healthy(st, t0)
    refunded_at = confirmed_at + (st.ctx.now - confirmed_at) * st.rng.uniform(0.2, 0.9)
    staff = st.rng.random() < 0.6
    st.move(O.REFUNDED, refunded_at, actor=Actor.STAFF if staff else Actor.MERCHANT,
            user=st.ctx.users["agent" if staff else "manager"], reason=st.ctx.messages.refunded)


def _cancelled_unpaid(st: _Story, t0: datetime) -> None:
    st.move(O.CANCELLED, st.later(t0, 30, 1200), actor=Actor.CUSTOMER, label=st.order.customer_email,
            reason=st.ctx.messages.customer_cancelled)


def _cancelled_pending(st: _Story, t0: datetime) -> None:
    messages = st.ctx.messages
    attempt = st.start_attempt(st.later(t0, 5, 120))
    at = st.later(attempt.created_at, 20, 600)
    st.attempt_move(attempt, A.CANCELLED, at, actor=Actor.CUSTOMER, reason=messages.attempt_cancelled)
    st.move(O.CANCELLED, st.later(at, 0.1, 2), actor=Actor.CUSTOMER, label=st.order.customer_email,
            reason=messages.customer_cancelled)


def _expired_unpaid(st: _Story, t0: datetime) -> None:
    # It was unreturned (nobody paid) until expiry resolved it.
    st.flag(Cause.NO_PAYMENT_STARTED, t0 + timedelta(seconds=st.stuck_after))
    st.move(O.EXPIRED, t0 + timedelta(seconds=st.expire_after), reason=st.ctx.messages.expired)


def _expired_pending(st: _Story, t0: datetime) -> None:
    messages = st.ctx.messages
    attempt = st.start_attempt(st.later(t0, 5, 120))
    action = "3ds" if attempt.provider in _THREE_DS_PROVIDERS else "bank_app"
    attempt.action_required = action
    for offset in _CHECK_OFFSETS[A.PENDING][:3]:
        st.check(attempt, attempt.created_at + timedelta(seconds=offset), status=A.PENDING, action_required=action)
    st.flag(Cause.AWAITING_CUSTOMER_ACTION, attempt.created_at + timedelta(seconds=st.stuck_after))
    expire_at = t0 + timedelta(seconds=st.expire_after)
    st.attempt_move(attempt, A.EXPIRED, expire_at - timedelta(seconds=st.rng.randint(1, 60)),
                    reason=messages.attempt_expired)
    st.move(O.EXPIRED, expire_at, reason=messages.expired)


def _recent_pending(st: _Story, t0: datetime) -> None:
    budget = (st.ctx.now - t0).total_seconds()
    attempt = st.start_attempt(st.later(t0, 1, max(1.0, budget * 0.3)))
    st.open_checks(attempt, answer=lambda i, n: {"status": A.PENDING})


def _recent_paid(st: _Story, t0: datetime) -> None:
    budget = (st.ctx.now - t0).total_seconds()
    attempt = st.start_attempt(st.later(t0, 1, max(1.0, budget * 0.2)))
    st.pay(attempt, st.later(attempt.created_at, 1, max(1.0, budget * 0.4)))


def _no_payment_started(st: _Story, t0: datetime) -> None:
    st.flag(Cause.NO_PAYMENT_STARTED, t0 + timedelta(seconds=st.stuck_after))


def _awaiting_customer_action(st: _Story, t0: datetime) -> None:
    attempt = st.start_attempt(st.later(t0, 5, 180), avoid_outage=True)
    action = "3ds" if attempt.provider in _THREE_DS_PROVIDERS else "bank_app"
    # The provider asked for the customer's action when the payment was created.
    attempt.action_required = action
    exhausted = st.open_checks(attempt, answer=lambda i, n: {"status": A.PENDING, "action_required": action})
    st.flag(Cause.AWAITING_CUSTOMER_ACTION, attempt.created_at + timedelta(seconds=st.stuck_after),
            needs_review=exhausted)


def _payment_declined(st: _Story, t0: datetime) -> None:
    messages = st.ctx.messages
    attempt = st.start_attempt(st.later(t0, 5, 180))
    failed_at = st.later(attempt.created_at, 10, 240)
    code = st.rng.choice(_DECLINE_CODES)
    if st.rng.random() < 0.6:
        st.callback(attempt, failed_at, kind="payment.failed", failure_code=code)
    else:
        st.check(attempt, failed_at, status=A.FAILED, failure_code=code)
    st.attempt_move(attempt, A.FAILED, failed_at, reason=messages.provider_failed, failure_code=code)
    st.move(O.PAYMENT_FAILED, failed_at, actor=Actor.PROVIDER, label=attempt.provider,
            reason=messages.provider_failed, data={"attempt_id": attempt, "failure_code": code})
    st.flag(Cause.PAYMENT_DECLINED, failed_at + timedelta(seconds=st.stuck_after))


def _invalid_customer_data(st: _Story, t0: datetime) -> None:
    rng = st.rng
    order = st.order
    # Stored as the merchant's confirmation system reported it, in its language.
    errors: dict[str, str] = {}
    if rng.random() < 0.7:
        order.customer_phone = rng.choice(_INVALID_PHONES)
        errors["customer_phone"] = "Enter a valid mobile number."
    if not errors or rng.random() < 0.5:
        order.shipping_address = rng.choice(_INVALID_ADDRESSES)
        errors["shipping_address"] = "The shipping address is incomplete."
    paid_at = _healthy(st, t0, confirm=False)
    st.event(Kind.CONFIRMATION_FAILED, st.later(paid_at, 0.5, 5), message=st.ctx.messages.validation_failed,
             data={"error": "Customer data failed validation", "validation": errors})
    # Retrying cannot help until someone corrects the data.
    order.confirmation_failures = 1
    st.flag(Cause.INVALID_CUSTOMER_DATA, paid_at + timedelta(seconds=st.stuck_after))


def _processing_error(st: _Story, t0: datetime) -> None:
    rng = st.rng
    paid_at = _healthy(st, t0, confirm=False)
    error = rng.choice(_PROCESSING_ERRORS)
    at = paid_at
    tries = rng.randint(1, 4)
    for attempt_number in range(1, tries + 1):
        # Confirmation is retried with backoff; every failure is on the timeline.
        at = st.later(at, 1, 5) if attempt_number == 1 else at + timedelta(seconds=30 * 2 ** attempt_number)
        st.event(Kind.CONFIRMATION_FAILED, at, message=st.ctx.messages.confirmation_failed,
                 data={"error": error, "try": attempt_number})
    st.order.confirmation_failures = tries
    # After the fourth failure confirmation stops retrying and waits for a fix.
    st.order.confirm_retry_at = None if tries == 4 else at + timedelta(seconds=30 * 2 ** (tries + 1))
    st.flag(Cause.PROCESSING_ERROR, max(at, paid_at + timedelta(seconds=st.stuck_after)))


def _result_unknown(st: _Story, t0: datetime) -> None:
    # Creating the payment timed out: we never learnt the provider's reference or answer.
    attempt = st.start_attempt(st.later(t0, 5, 180), status=A.INITIATED, with_reference=False, avoid_outage=True)
    st.attempt_move(attempt, A.UNKNOWN, st.later(attempt.created_at, 10, 12), actor=Actor.SYSTEM,
                    reason=st.ctx.messages.provider_timeout, data={"error": "timeout"})
    # The provider alternates between "no such payment (yet)" and no answer at all: the
    # latest check timed out, but the provider is reachable, so this is not unreachable.
    exhausted = st.open_checks(attempt, answer=lambda i, n: {
        "error": CheckErrorKind.TIMEOUT if (n - 1 - i) % 2 == 0 else CheckErrorKind.NOT_FOUND,
        "http_status": 404 if (n - 1 - i) % 2 else None})
    st.flag(Cause.RESULT_UNKNOWN, attempt.created_at + timedelta(seconds=st.stuck_after), needs_review=exhausted)


def _provider_unreachable(st: _Story, t0: datetime) -> None:
    rng = st.rng
    attempt = st.start_attempt(st.later(t0, 5, 180), avoid_outage=True)
    failing = rng.randint(3, 5)

    def answer(index: int, total: int) -> dict[str, Any]:
        if index < total - failing:
            return {"status": A.PENDING}
        if rng.random() < 0.5:
            return {"error": CheckErrorKind.HTTP_ERROR}
        return {"error": rng.choice((CheckErrorKind.CONNECTION, CheckErrorKind.TIMEOUT))}

    exhausted = st.open_checks(attempt, answer=answer)
    st.flag(Cause.PROVIDER_UNREACHABLE, attempt.created_at + timedelta(seconds=st.stuck_after),
            needs_review=exhausted)


def _provider_outage(st: _Story, t0: datetime) -> None:
    rng = st.rng
    created = st.later(t0, 1, 5)
    # An attempt too young for its first check only shows the outage when creating it timed out.
    if rng.random() < 0.5 or (st.ctx.now - created).total_seconds() < _CHECK_OFFSETS[A.PENDING][0] + 10:
        attempt = st.start_attempt(created, provider=OUTAGE_PROVIDER, status=A.INITIATED, with_reference=False)
        st.attempt_move(attempt, A.UNKNOWN, st.later(created, 10, 12), actor=Actor.SYSTEM,
                        reason=st.ctx.messages.provider_timeout, data={"error": "timeout"})
    else:
        attempt = st.start_attempt(created, provider=OUTAGE_PROVIDER)
    st.open_checks(attempt, answer=lambda i, n: {"error": rng.choice(
        (CheckErrorKind.TIMEOUT, CheckErrorKind.HTTP_ERROR, CheckErrorKind.HTTP_ERROR, CheckErrorKind.CONNECTION))})
    stuck_since = attempt.created_at + timedelta(seconds=st.stuck_after)
    if stuck_since <= st.ctx.now:  # the youngest are not past their merchant's threshold yet
        st.flag(Cause.PROVIDER_OUTAGE, stuck_since)


def _callback_lost(st: _Story, t0: datetime) -> None:
    # The provider has a final answer that never reached us by callback.
    attempt = st.start_attempt(st.later(t0, 5, 180))
    st.open_checks(attempt, answer=lambda i, n: {"status": A.SUCCEEDED if i == n - 1 else A.PENDING})
    st.flag(Cause.CALLBACK_LOST, attempt.created_at + timedelta(seconds=st.stuck_after))


def _amount_mismatch(st: _Story, t0: datetime) -> None:
    rng = st.rng
    order = st.order
    attempt = st.start_attempt(st.later(t0, 5, 180))
    places = MINOR_UNITS[order.currency]
    quantum = Decimal(1).scaleb(-places)
    roll = rng.random()
    amount, currency = order.amount, order.currency
    if roll < 0.4 and order.amount > 50:
        # A coupon applied at the provider, not on the order.
        amount = (order.amount - Decimal(rng.choice((5, 10, 20)))).quantize(quantum)
    elif roll < 0.7:
        # Minor units read as major units (fen as yuan, cents as dollars).
        amount = (order.amount / 100).quantize(quantum)
        if amount <= 0:
            amount = quantum
    else:
        currency = "USD" if order.currency != "USD" else "HKD"
    st.open_checks(attempt, answer=lambda i, n: (
        {"status": A.SUCCEEDED, "amount": amount, "currency": currency} if i == n - 1 else {"status": A.PENDING}))
    if rng.random() < 0.5 and attempt.last_checked_at is not None:
        st.callback(attempt, attempt.last_checked_at - timedelta(seconds=rng.randint(1, 30)),
                    outcome=CallbackOutcome.FAILED,
                    error=f"Reported {amount} {currency} differs from the order ({order.amount} {order.currency})")
    st.flag(Cause.AMOUNT_MISMATCH, attempt.created_at + timedelta(seconds=st.stuck_after), needs_review=True)


def _duplicate_payment(st: _Story, t0: datetime) -> None:
    # The customer paid twice: a second attempt started while the first was still pending.
    first = st.start_attempt(st.later(t0, 5, 120))
    second = st.start_attempt(st.later(first.created_at, 30, 180))
    paid_at = st.pay(first, st.later(second.created_at, 5, 60))
    second_at = st.later(paid_at, 5, 300)
    st.callback(second, second_at)
    st.attempt_move(second, A.SUCCEEDED, second_at, reason=st.ctx.messages.provider_succeeded)
    st.flag(Cause.DUPLICATE_PAYMENT, st.later(second_at, 0.1, 2), needs_review=True)


def _no_access(st: _Story, t0: datetime) -> None:
    paid_at = _healthy(st, t0, confirm=False)
    budget = (st.ctx.now - paid_at).total_seconds()
    reported_at = st.later(paid_at, min(budget * 0.3, st.stuck_after), budget * 0.9)
    viewer = st.ctx.users["viewer"]
    # The order belongs to another merchant than the reporter's: it exists, outside their scope.
    st.event(Kind.ACCESS_REPORTED, reported_at, actor=Actor.MERCHANT, user=viewer,
             message=st.ctx.messages.reported_missing,
             data={"reported_by": viewer.username, "reporter_merchant": st.ctx.first_merchant_code,
                   "report": "order_missing"})
    st.flag(Cause.NO_ACCESS, reported_at)


_STORIES: dict[str, Callable[[_Story, datetime], Any]] = {
    HEALTHY: _healthy,
    RETRY_THEN_PAID: _retry_then_paid,
    REFUNDED: _refunded,
    CANCELLED_UNPAID: _cancelled_unpaid,
    CANCELLED_PENDING: _cancelled_pending,
    EXPIRED_UNPAID: _expired_unpaid,
    EXPIRED_PENDING: _expired_pending,
    RECENT_SUBMITTED: lambda st, t0: None,
    RECENT_PENDING: _recent_pending,
    RECENT_PAID: _recent_paid,
    Cause.NO_PAYMENT_STARTED: _no_payment_started,
    Cause.AWAITING_CUSTOMER_ACTION: _awaiting_customer_action,
    Cause.PAYMENT_DECLINED: _payment_declined,
    Cause.INVALID_CUSTOMER_DATA: _invalid_customer_data,
    Cause.RESULT_UNKNOWN: _result_unknown,
    Cause.PROVIDER_UNREACHABLE: _provider_unreachable,
    Cause.PROVIDER_OUTAGE: _provider_outage,
    Cause.CALLBACK_LOST: _callback_lost,
    Cause.AMOUNT_MISMATCH: _amount_mismatch,
    Cause.DUPLICATE_PAYMENT: _duplicate_payment,
    Cause.PROCESSING_ERROR: _processing_error,
    Cause.NO_ACCESS: _no_access,
}


def _age_range(label: str, spec: DemoMerchant) -> tuple[int, int]:
    """How long ago (seconds) an order of this story may have been submitted.

    Stuck orders are older than their merchant's stuck_after (with room for the steps
    before the flag) but younger than its expiry where expiry would have ended them.
    """
    stuck = int(spec.stuck_after.total_seconds())
    expire = int(spec.expire_after.total_seconds())
    week = 7 * DAY
    stuck_low = int(stuck * 1.2) + 10 * MINUTE
    ranges = {
        HEALTHY: (HOUR, week),
        RETRY_THEN_PAID: (HOUR, week),
        REFUNDED: (3 * HOUR, week),
        CANCELLED_UNPAID: (HOUR, week),
        CANCELLED_PENDING: (HOUR, week),
        EXPIRED_UNPAID: (expire + 10 * MINUTE, week),
        EXPIRED_PENDING: (expire + 10 * MINUTE, week),
        RECENT_SUBMITTED: (30, int(stuck * 0.7)),
        RECENT_PENDING: (60, int(stuck * 0.8)),
        RECENT_PAID: (60, int(stuck * 0.8)),
        Cause.NO_PAYMENT_STARTED: (int(stuck * 1.2), int(expire * 0.9)),
        Cause.AWAITING_CUSTOMER_ACTION: (stuck_low, min(int(expire * 0.9), 2 * DAY)),
        Cause.PAYMENT_DECLINED: (stuck_low, int(expire * 0.9)),
        Cause.INVALID_CUSTOMER_DATA: (stuck_low, 4 * DAY),
        Cause.RESULT_UNKNOWN: (stuck_low, min(int(expire * 0.9), 3 * DAY)),
        # Old enough for three checks, young enough that they are recent.
        Cause.PROVIDER_UNREACHABLE: (max(stuck_low, 30 * MINUTE), min(int(expire * 0.9), 6 * HOUR)),
        Cause.CALLBACK_LOST: (stuck_low, min(int(expire * 0.9), DAY)),
        Cause.AMOUNT_MISMATCH: (stuck_low, min(int(expire * 0.9), 2 * DAY)),
        Cause.DUPLICATE_PAYMENT: (HOUR, 4 * DAY),
        Cause.PROCESSING_ERROR: (stuck_low + HOUR, 3 * DAY),
        Cause.NO_ACCESS: (stuck_low + HOUR, 5 * DAY),
    }
    low, high = ranges[label]
    return low, max(low, high)


@dataclass(frozen=True)
class _Planned:
    age: int  # seconds before "now"
    label: str
    merchant: int  # index into DEMO_MERCHANTS


def _plan(rng: random.Random, orders: int, specs: list[DemoMerchant]) -> list[_Planned]:
    counts = plan_counts(orders)
    shares = [spec.share for spec in specs]
    indices = range(len(specs))
    outage_merchants = [
        i for i, spec in enumerate(specs)
        if OUTAGE_PROVIDER in dict(spec.providers) and spec.stuck_after <= OUTAGE_MAX_STUCK_AFTER
    ]
    planned: list[_Planned] = []
    for label, count in counts.items():
        for n in range(count):
            if label == Cause.PROVIDER_OUTAGE:
                merchant = rng.choice(outage_merchants)
                age = 10 + int((OUTAGE_DURATION - 10) * (n + rng.random()) / count)
            else:
                # no_access needs an order outside the demo merchant users' own merchant.
                choices = indices if label != Cause.NO_ACCESS else indices[1:]
                weights = shares if label != Cause.NO_ACCESS else shares[1:]
                merchant = rng.choices(choices, weights)[0]
                age = rng.randint(*_age_range(label, specs[merchant]))
            planned.append(_Planned(age, label, merchant))
    # Oldest first, so ids and reference numbers grow with time as in a real shop.
    planned.sort(key=lambda p: (-p.age, p.merchant, p.label))
    return planned


def _amount(rng: random.Random, spec: DemoMerchant) -> Decimal:
    low, high = spec.price_range
    # Prices cluster at the cheap end, with endings shops actually use.
    whole = int(low * (high / low) ** (rng.random() ** 1.4))
    places = MINOR_UNITS[spec.currency]
    if places == 0:
        return Decimal(whole)
    ending = rng.choice(("00", "00", "90", "99", "50", "80"))
    return Decimal(f"{whole}.{ending}").quantize(Decimal(1).scaleb(-places))


# --- writing --------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.orders = _Table(Order, with_pk=True)
        self.attempts = _Table(PaymentAttempt, refs={"order_id": "order"}, with_pk=True)
        self.checks = _Table(PaymentCheck, refs={"attempt_id": "attempt"})
        self.callbacks = _Table(ProviderCallback, refs={"attempt_id": "attempt"})
        self.events = _Table(OrderEvent, refs={"order_id": "order", "attempt_id": "attempt"})

    def write(self, stories: list[_Story]) -> tuple[int, int, int, int]:
        orders = [st.order for st in stories]
        attempts = [a for st in stories for a in st.attempts]
        checks = [c for st in stories for c in st.checks]
        callbacks = [c for st in stories for c in st.callbacks]
        events = [e for st in stories for e in st.events]
        with transaction.atomic():
            for row, pk in zip(orders, _reserve_ids(Order, len(orders))):
                row.id = pk
            for row, pk in zip(attempts, _reserve_ids(PaymentAttempt, len(attempts))):
                row.id = pk
            for st in stories:
                for data, attempt in st.attempt_ids:
                    data["attempt_id"] = attempt.id
            self.orders.insert(orders)
            self.attempts.insert(attempts)
            self.checks.insert(checks)
            self.callbacks.insert(callbacks)
            self.events.insert(events)
        return len(attempts), len(checks), len(callbacks), len(events)


def generate_orders(
    *,
    merchants: list[Merchant],
    users: dict[str, Any],
    orders: int,
    seed: int,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Write `orders` demo orders with their attempts, checks, callbacks and events."""
    rng = random.Random(seed)
    by_code = {merchant.code: merchant for merchant in merchants}
    # A demo merchant that already existed keeps its own thresholds; the stories follow them.
    specs = [
        replace(spec, stuck_after=by_code[spec.code].stuck_after, escalate_after=by_code[spec.code].escalate_after,
                expire_after=by_code[spec.code].expire_after)
        for spec in DEMO_MERCHANTS
    ]
    pool_size = min(2000, max(50, orders // 4))
    pools = {"zh_CN": _customer_pool("zh_CN", seed, pool_size), "en_US": _customer_pool("en_US", seed + 1, pool_size)}
    providers = {name for spec in DEMO_MERCHANTS for name, _w in spec.providers}
    ctx = _Context(rng=rng, now=now, messages=_Messages(providers), users=users,
                   first_merchant_code=DEMO_MERCHANTS[0].code)
    counters = [rng.randint(1_000_000, 3_000_000) if "{:06d}" not in spec.reference_format
                else rng.randint(100_000, 300_000) for spec in DEMO_MERCHANTS]
    result = SeedResult(created=True)
    chunk: list[_Story] = []
    writer = _Writer()

    def flush() -> None:
        n_attempts, n_checks, n_callbacks, n_events = writer.write(chunk)
        result.orders += len(chunk)
        result.attempts += n_attempts
        result.checks += n_checks
        result.callbacks += n_callbacks
        result.events += n_events
        if progress:
            progress(len(chunk))
        chunk.clear()

    for planned in _plan(rng, orders, specs):
        spec = specs[planned.merchant]
        merchant = by_code[spec.code]
        counters[planned.merchant] += rng.randint(1, 7)
        home, away = ("en_US", "zh_CN") if spec.currency == "USD" else ("zh_CN", "en_US")
        pool = pools[away if rng.random() < spec.foreign_customers else home]
        customer = pool[rng.randrange(len(pool))]
        t0 = now - timedelta(seconds=planned.age)
        order = _new_order(
            merchant_id=merchant.pk, reference=spec.reference_format.format(counters[planned.merchant]),
            customer_name=customer.name, customer_email=customer.email, customer_phone=customer.phone,
            shipping_address=customer.address, amount=_amount(rng, spec), currency=spec.currency,
            status=O.SUBMITTED, submitted_at=t0, status_changed_at=t0,
        )
        story = _Story(ctx, order, spec)
        story.event(Kind.CREATED, t0, label="merchant-api", message=ctx.messages.created,
                    data={"amount": str(order.amount), "currency": order.currency})
        _STORIES[planned.label](story, t0)
        order.updated_at = max(event.created_at for event in story.events)
        if order.status in _SWEPT_STATUSES:
            # Tells the unreturned sweep when to look (again); already past for flagged orders.
            order.sweep_due_at = order.status_changed_at + spec.stuck_after
        result.statuses[order.status] += 1
        if order.stuck_cause:
            result.causes[order.stuck_cause] += 1
        chunk.append(story)
        if len(chunk) >= CHUNK_SIZE:
            flush()
    if chunk:
        flush()
    return result


def seed_demo(
    *,
    orders: int = DEFAULT_ORDERS,
    seed: int = DEFAULT_SEED,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Create the demo merchants, logins and orders; a second run adds nothing.

    Raises ValueError when `orders` is below MIN_ORDERS (too few to show every cause).
    """
    plan_counts(orders)
    # One anchor for every timestamp; whole minutes so reruns in one minute look alike.
    now = now or timezone.now().replace(second=0, microsecond=0)
    with transaction.atomic():
        merchants = ensure_demo_merchants(now=now)
        users = ensure_demo_users(merchant=merchants[0])
    result = SeedResult(created=False, merchants=len(merchants), users=len(users))
    if demo_orders_exist():
        return result
    generated = generate_orders(merchants=merchants, users=users, orders=orders, seed=seed, now=now,
                                progress=progress)
    backfill_unreturned_snapshots(now=now)
    generated.merchants, generated.users = result.merchants, result.users
    return generated



# --- backlog history ------------------------------------------------------------------------

BACKFILL_DAYS = 7
BACKFILL_RECENT = timedelta(hours=24)  # every 15 minutes in the last day, hourly before


def _backfill_times(now: datetime) -> list[datetime]:
    recent = [now - timedelta(minutes=15 * k) for k in range(int(BACKFILL_RECENT / timedelta(minutes=15)) + 1)]
    older = [now - timedelta(hours=h) for h in range(int(BACKFILL_RECENT / timedelta(hours=1)) + 1,
                                                     BACKFILL_DAYS * 24 + 1)]
    return sorted(recent + older)


def backfill_unreturned_snapshots(*, now: datetime) -> int:
    """Unreturned snapshots for the week before `now`, as the sweep would have taken them.

    The seeded orders carry their own history: each flag is a `flagged` event with its cause,
    review requests are `review_requested` events, and a flag ends at the order's
    `resolved_at` (or is still open). Counting those intervals at each point gives the
    dashboard's trend charts a deterministic week instead of an empty week. The last point,
    at `now`, equals `orders.snapshots.unreturned_counts(now=now)`. Does nothing when
    snapshots of that week already exist.
    """
    from bisect import bisect_left

    from orders.models import UnreturnedSnapshot
    from orders.snapshots import AGE_BUCKETS

    start = now - timedelta(days=BACKFILL_DAYS)
    if UnreturnedSnapshot.objects.filter(taken_at__gte=start).exists():
        return 0
    times = _backfill_times(now)
    demo_codes = [spec.code for spec in DEMO_MERCHANTS]
    flags: dict[int, tuple[datetime, str, str]] = {}
    reviews: dict[int, datetime] = {}
    resolved: dict[int, datetime | None] = {}
    rows = (
        OrderEvent.objects.filter(kind__in=[Kind.FLAGGED, Kind.REVIEW_REQUESTED], order__merchant__code__in=demo_codes)
        .order_by("created_at", "id")
        .values_list("order_id", "kind", "created_at", "data", "order__resolved_at")
    )
    for order_id, kind, at, data, resolved_at in rows:
        resolved[order_id] = resolved_at
        if kind == Kind.FLAGGED:
            flags.setdefault(order_id, (at, data.get("cause", ""), data.get("category", "")))
        else:
            reviews.setdefault(order_id, at)
    providers: dict[int, list[tuple[datetime, str]]] = {}
    attempts = (
        PaymentAttempt.objects.filter(order_id__in=list(flags))
        .order_by("created_at", "id")
        .values_list("order_id", "created_at", "provider")
    ) if flags else []
    for order_id, created_at, provider in attempts:
        providers.setdefault(order_id, []).append((created_at, provider))

    points: list[dict[str, Any]] = [
        {"total": 0, "needs_review": 0, "by_cause": Counter(), "by_category": Counter(), "by_provider": Counter(),
         "by_age": dict.fromkeys(AGE_BUCKETS, 0)}
        for _t in times
    ]
    for order_id, (since, cause, category) in flags.items():
        end = resolved[order_id]
        # Points at which the flag was open: since <= t < end.
        first = bisect_left(times, since)
        last = bisect_left(times, end) if end is not None else len(times)
        review = reviews.get(order_id)
        for index in range(first, last):
            t = times[index]
            point = points[index]
            point["total"] += 1
            point["by_cause"][cause] += 1
            point["by_category"][category] += 1
            if review is not None and review <= t:
                point["needs_review"] += 1
            seen = {provider for created_at, provider in providers.get(order_id, ()) if created_at <= t}
            for provider in seen:
                point["by_provider"][provider] += 1
            age = t - since
            for code, (low, high) in AGE_BUCKETS.items():
                if low <= age and (high is None or age < high):
                    point["by_age"][code] += 1
                    break
    UnreturnedSnapshot.objects.bulk_create(
        [
            UnreturnedSnapshot(
                taken_at=t, total=p["total"], needs_review=p["needs_review"], by_cause=dict(p["by_cause"]),
                by_category=dict(p["by_category"]), by_provider=dict(p["by_provider"]), by_age=p["by_age"],
            )
            for t, p in zip(times, points)
        ],
        batch_size=500,
    )
    return len(times)
