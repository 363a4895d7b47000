"""Merchants, orders, payment attempts, checks, callbacks and the order timeline.

Models hold data and database-level invariants only. Every status change goes through
`orders.services`; nothing here writes `status`.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from orders.causes import Category, Cause
from orders.states import ATTEMPT_OPEN, ORDER_CAPTURED, AttemptStatus, OrderStatus

MONEY = {"max_digits": 14, "decimal_places": 2}
currency_validator = RegexValidator(r"^[A-Z]{3}$", _("Use a three-letter ISO 4217 code such as CNY or USD."))


def new_status_token() -> str:
    # 256 bits from the OS; the customer page is reached only through this token.
    return secrets.token_urlsafe(32)


def _three_letters(field: str) -> Exact:
    return Exact(Length(field), 3)


class Merchant(models.Model):
    code = models.SlugField(_("code"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=200)
    stuck_after = models.DurationField(
        _("unreturned after"),
        default=timedelta(minutes=15),
        help_text=_("An order without an outcome for this long is flagged as unreturned."),
    )
    escalate_after = models.DurationField(
        _("escalate after"),
        default=timedelta(hours=2),
        help_text=_("An unreturned order older than this gets a support ticket."),
    )
    expire_after = models.DurationField(
        _("expire after"),
        default=timedelta(hours=24),
        help_text=_("An order with no payment after this long expires."),
    )
    default_currency = models.CharField(_("default currency"), max_length=3, default="CNY", validators=[currency_validator])
    active = models.BooleanField(_("active"), default=True)
    mark_paid_approval_above = models.DecimalField(
        _("second approval above"), **MONEY, null=True, blank=True,
        help_text=_("Marking an order paid by hand above this amount needs a second staff member's approval. "
                    "Empty: never."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("merchant")
        verbose_name_plural = _("merchants")
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(stuck_after__gt=timedelta(0)), name="merchant_stuck_after_positive"),
            models.CheckConstraint(
                condition=Q(escalate_after__gte=models.F("stuck_after")), name="merchant_escalate_after_stuck"
            ),
            models.CheckConstraint(condition=Q(expire_after__gt=timedelta(0)), name="merchant_expire_after_positive"),
            models.CheckConstraint(condition=_three_letters("default_currency"), name="merchant_currency_len3"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"



def default_pending_delays() -> list[int]:
    return [60, 300, 900, 3600, 21600, 86400]


def default_unknown_delays() -> list[int]:
    return [30, 60, 300, 900, 3600, 21600, 86400]


class RecheckPolicy(models.Model):
    """How often an open payment attempt is re-checked with its provider.

    One row per provider (merchant empty) and optional rows per merchant that override it.
    The n-th check of an attempt waits the n-th delay of the list for its status; when the
    list is used up the order needs review.
    """

    provider = models.CharField(_("provider"), max_length=32)
    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, null=True, blank=True, related_name="recheck_policies",
        verbose_name=_("merchant"), help_text=_("Leave empty for the provider's default policy."),
    )
    pending_delays = models.JSONField(
        _("delays while pending (seconds)"), default=default_pending_delays,
        help_text=_("Seconds before each check while the provider says pending, e.g. [60, 300, 900, 3600]."),
    )
    unknown_delays = models.JSONField(
        _("delays while unknown (seconds)"), default=default_unknown_delays,
        help_text=_("Seconds before each check while the result is unknown (timeouts, no answer)."),
    )
    max_in_flight = models.PositiveSmallIntegerField(
        _("calls in flight"), default=8, help_text=_("At most this many queries to the provider at once.")
    )
    jitter = models.FloatField(
        _("jitter"), default=0.1, help_text=_("Each delay is spread by up to this fraction, so checks do not bunch up.")
    )

    class Meta:
        verbose_name = _("re-check policy")
        verbose_name_plural = _("re-check policies")
        ordering = ["provider", "merchant__code"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider"], condition=Q(merchant__isnull=True), name="policy_unique_provider_default"
            ),
            models.UniqueConstraint(
                fields=["provider", "merchant"], condition=Q(merchant__isnull=False), name="policy_unique_provider_merchant"
            ),
            models.CheckConstraint(condition=Q(max_in_flight__gte=1), name="policy_in_flight_positive"),
            models.CheckConstraint(condition=Q(jitter__gte=0) & Q(jitter__lte=1), name="policy_jitter_fraction"),
        ]

    def __str__(self) -> str:
        if self.merchant_id:
            return f"{self.provider} / {self.merchant.code}"
        return _("%(provider)s (default)") % {"provider": self.provider}

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        errors = {}
        for name in ("pending_delays", "unknown_delays"):
            value = getattr(self, name)
            if not (isinstance(value, list) and value and all(isinstance(v, int) and v > 0 for v in value)):
                errors[name] = _("Give a non-empty list of whole seconds greater than zero, e.g. [60, 300, 900].")
        if errors:
            raise ValidationError(errors)


class MembershipRole(models.TextChoices):
    VIEWER = "viewer", _("Viewer")
    OPERATOR = "operator", _("Operator")
    MANAGER = "manager", _("Manager")

class MerchantMembership(models.Model):
    Role = MembershipRole
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=16, choices=MembershipRole.choices, default=MembershipRole.VIEWER)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("merchant membership")
        verbose_name_plural = _("merchant memberships")
        constraints = [
            models.UniqueConstraint(fields=["user", "merchant"], name="membership_unique_user_merchant"),
            models.CheckConstraint(condition=Q(role__in=MembershipRole.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.merchant.code} ({self.role})"


class MembershipEventKind(models.TextChoices):
    ADDED = "added", pgettext_lazy("membership event", "added")
    ROLE_CHANGED = "role_changed", pgettext_lazy("membership event", "role changed")
    REMOVED = "removed", pgettext_lazy("membership event", "removed")


class MembershipEvent(models.Model):
    """Append-only record of a change to a merchant's memberships (`orders.memberships`): who
    was added, moved to another role or removed, by whom. The usernames are kept as written
    then, so the record still reads after an account is deleted."""

    Kind = MembershipEventKind

    # Indexed by membership_event_recent_idx, which leads with merchant_id.
    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, related_name="membership_events", verbose_name=_("merchant"),
        db_index=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("member"),
    )
    username = models.CharField(_("member's username"), max_length=150)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("changed by"),
    )
    actor_username = models.CharField(_("changed by (username)"), max_length=150, blank=True)
    kind = models.CharField(_("change"), max_length=16, choices=MembershipEventKind.choices)
    from_role = models.CharField(_("from role"), max_length=16, choices=MembershipRole.choices, blank=True)
    to_role = models.CharField(_("to role"), max_length=16, choices=MembershipRole.choices, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    class Meta:
        verbose_name = _("membership change")
        verbose_name_plural = _("membership changes")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=MembershipEventKind.values), name="membership_event_kind_valid"),
            models.CheckConstraint(
                condition=Q(from_role="") | Q(from_role__in=MembershipRole.values), name="membership_event_from_valid"
            ),
            models.CheckConstraint(
                condition=Q(to_role="") | Q(to_role__in=MembershipRole.values), name="membership_event_to_valid"
            ),
        ]
        indexes = [models.Index(fields=["merchant", "-created_at"], name="membership_event_recent_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.username} @ {self.merchant_id}"

    def save(self, *args, **kwargs) -> None:
        # A record of who changed access: written once, never edited.
        if self.pk is not None and not self._state.adding:
            raise ValueError("Membership events are append-only.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)


class Order(models.Model):
    # No index of its own: the (merchant, reference) constraint and the merchant indexes below
    # lead with merchant_id and serve every lookup by merchant.
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="orders", verbose_name=_("merchant"), db_index=False
    )
    reference = models.CharField(_("reference"), max_length=64, help_text=_("The merchant's own order number."))
    customer_name = models.CharField(_("customer name"), max_length=200)
    customer_email = models.EmailField(_("customer email"), max_length=254)
    customer_phone = models.CharField(_("customer phone"), max_length=32, blank=True)
    shipping_address = models.TextField(_("shipping address"), blank=True)
    amount = models.DecimalField(_("amount"), **MONEY, validators=[MinValueValidator(Decimal("0.01"))])
    currency = models.CharField(_("currency"), max_length=3, validators=[currency_validator])
    captured_amount = models.DecimalField(_("captured amount"), **MONEY, default=Decimal("0"))

    status = models.CharField(_("status"), max_length=20, choices=OrderStatus.choices, default=OrderStatus.SUBMITTED)
    submitted_at = models.DateTimeField(_("submitted"), default=timezone.now)
    status_changed_at = models.DateTimeField(_("status changed"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    # Unreturned is a flag with a cause, orthogonal to status.
    stuck_since = models.DateTimeField(_("unreturned since"), null=True, blank=True)
    stuck_cause = models.CharField(_("cause"), max_length=32, choices=Cause.choices, blank=True)
    stuck_category = models.CharField(_("category"), max_length=16, choices=Category.choices, blank=True)
    needs_review = models.BooleanField(_("needs review"), default=False)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)

    receipt_number = models.CharField(_("receipt number"), max_length=32, blank=True)
    dispatch_number = models.CharField(_("dispatch note number"), max_length=32, blank=True)

    # Unique through a constraint in Meta rather than unique=True, which on PostgreSQL also
    # builds a second (pattern-matching) index that token lookups never use.
    status_token = models.CharField(max_length=64, default=new_status_token, editable=False)

    # When the unreturned sweep should next look at this order; null when nothing can change
    # without new evidence. Keeps a sweep with nothing due down to one indexed query.
    sweep_due_at = models.DateTimeField(_("next diagnosis"), null=True, blank=True, editable=False)
    confirmation_failures = models.PositiveSmallIntegerField(_("failed confirmations"), default=0)
    confirm_retry_at = models.DateTimeField(_("next confirmation retry"), null=True, blank=True)
    # Indexed by the partial order_assignee_idx only (most orders have no assignee).
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="assigned_orders",
        verbose_name=_("assignee"), db_index=False,
    )

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        ordering = ["-submitted_at", "-id"]
        # Guarded staff actions; each is granted to groups in backoffice/roles.py.
        permissions = [
            ("check_now", _("Can check an order's payment now")),
            ("mark_paid", _("Can mark an order paid by hand")),
            ("approve_mark_paid", _("Can approve another person's mark-paid request")),
            ("mark_failed", _("Can mark an order's payment failed")),
            ("cancel_order", _("Can cancel an order")),
            ("retry_confirmation", _("Can retry an order's confirmation")),
            ("assign_order", _("Can assign orders")),
            ("add_note", _("Can add staff notes to orders")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "reference"], name="order_unique_reference_per_merchant"),
            models.UniqueConstraint(fields=["status_token"], name="order_unique_status_token"),
            models.CheckConstraint(condition=Q(status__in=OrderStatus.values), name="order_status_valid"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="order_amount_positive"),
            models.CheckConstraint(
                condition=Q(captured_amount__gte=0) & Q(captured_amount__lte=models.F("amount")),
                name="order_captured_within_amount",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=sorted(ORDER_CAPTURED)) | Q(captured_amount__gt=0),
                name="order_paid_has_capture",
            ),
            models.CheckConstraint(condition=_three_letters("currency"), name="order_currency_len3"),
            models.CheckConstraint(condition=~Q(reference=""), name="order_reference_not_blank"),
            # The flag always carries its cause and category, and an open flag is not resolved.
            models.CheckConstraint(
                condition=(Q(stuck_since__isnull=True, stuck_cause="", stuck_category="")
                           | (Q(stuck_since__isnull=False, resolved_at__isnull=True)
                              & ~Q(stuck_cause="") & ~Q(stuck_category=""))),
                name="order_stuck_flag_consistent",
            ),
            models.CheckConstraint(
                condition=Q(stuck_cause="") | Q(stuck_cause__in=Cause.values), name="order_stuck_cause_valid"
            ),
        ]
        indexes = [
            # Worklists of unreturned orders, overall, per merchant and per cause.
            models.Index(fields=["stuck_since"], name="order_unreturned_idx", condition=Q(stuck_since__isnull=False)),
            models.Index(
                fields=["merchant", "stuck_since"], name="order_unret_merchant_idx", condition=Q(stuck_since__isnull=False)
            ),
            models.Index(
                fields=["stuck_cause", "stuck_since"], name="order_unret_cause_idx", condition=Q(stuck_since__isnull=False)
            ),
            # A merchant's unreturned orders of one cause, newest first (the API's and the
            # portal's `cause` filter): one range scan instead of every merchant's orders of it.
            models.Index(
                fields=["merchant", "stuck_cause", "-submitted_at", "-id"], name="order_unret_merchant_cause_idx",
                condition=Q(stuck_since__isnull=False),
            ),
            models.Index(fields=["id"], name="order_needs_review_idx", condition=Q(needs_review=True)),
            models.Index(fields=["merchant", "-submitted_at"], name="order_merchant_recent_idx"),
            models.Index(fields=["-submitted_at", "-id"], name="order_recent_idx"),
            # Worklist search: exact or prefix ("ORD-2024*") on each column. The pattern opclass
            # serves both `=` and `LIKE 'prefix%'` whatever the database collation.
            models.Index(fields=["reference"], name="order_reference_search_idx", opclasses=["varchar_pattern_ops"]),
            models.Index(
                fields=["customer_email"], name="order_email_search_idx", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(
                fields=["customer_phone"], name="order_phone_search_idx", opclasses=["varchar_pattern_ops"]
            ),
            # The status filter of the worklist, newest first.
            models.Index(fields=["status", "-submitted_at"], name="order_status_recent_idx"),
            models.Index(fields=["sweep_due_at"], name="order_sweep_due_idx", condition=Q(sweep_due_at__isnull=False)),
            models.Index(fields=["assignee", "stuck_since"], name="order_assignee_idx", condition=Q(assignee__isnull=False)),
            models.Index(
                fields=["confirm_retry_at"], name="order_confirm_retry_idx", condition=Q(confirm_retry_at__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.merchant.code}/{self.reference}" if self.merchant_id else self.reference

    @property
    def is_unreturned(self) -> bool:
        return self.stuck_since is not None


class PaymentAttempt(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="attempts", verbose_name=_("order"))
    provider = models.CharField(_("provider"), max_length=32)
    provider_reference = models.CharField(_("provider reference"), max_length=128, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=64, unique=True)
    amount = models.DecimalField(_("amount"), **MONEY)
    currency = models.CharField(_("currency"), max_length=3, validators=[currency_validator])
    status = models.CharField(
        _("status"), max_length=16, choices=AttemptStatus.choices, default=AttemptStatus.INITIATED
    )
    failure_code = models.CharField(_("failure code"), max_length=64, blank=True)
    action_required = models.CharField(
        _("customer action required"), max_length=32, blank=True, help_text=_("For example 3ds or bank_app.")
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    status_changed_at = models.DateTimeField(_("status changed"), default=timezone.now)
    next_check_at = models.DateTimeField(_("next check"), null=True, blank=True)
    check_count = models.PositiveIntegerField(_("checks"), default=0)
    last_checked_at = models.DateTimeField(_("last checked"), null=True, blank=True)
    last_error_code = models.CharField(_("last error"), max_length=32, blank=True)
    last_error_message = models.TextField(_("last error message"), blank=True)
    last_raw_response = models.JSONField(_("last raw response"), null=True, blank=True)

    class Meta:
        verbose_name = _("payment attempt")
        verbose_name_plural = _("payment attempts")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=AttemptStatus.values), name="attempt_status_valid"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="attempt_amount_positive"),
            models.CheckConstraint(condition=_three_letters("currency"), name="attempt_currency_len3"),
            models.CheckConstraint(condition=~Q(provider=""), name="attempt_provider_not_blank"),
            models.UniqueConstraint(
                fields=["provider", "provider_reference"],
                name="attempt_unique_provider_reference",
                condition=~Q(provider_reference=""),
            ),
            # Only attempts still waiting for an answer are scheduled for a check.
            models.CheckConstraint(
                condition=Q(next_check_at__isnull=True) | Q(status__in=sorted(ATTEMPT_OPEN)),
                name="attempt_check_only_when_open",
            ),
        ]
        indexes = [
            models.Index(fields=["next_check_at"], name="attempt_due_idx", condition=Q(next_check_at__isnull=False)),
            models.Index(fields=["provider", "status", "created_at"], name="attempt_provider_status_idx"),
            # The outage detector looks at attempts created in the last minutes.
            models.Index(fields=["created_at"], name="attempt_created_idx"),
            # Worklist search by provider reference, exact or prefix (see Order's search indexes).
            models.Index(
                fields=["provider_reference"], name="attempt_provider_ref_idx", opclasses=["varchar_pattern_ops"]
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.provider_reference or self.idempotency_key}"



class CheckSource(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    MANUAL = "manual", _("Manual")
    CALLBACK = "callback", _("Callback")
    ON_READ = "on_read", _("On read")


class CheckErrorKind(models.TextChoices):
    NONE = "none", _("None")
    TIMEOUT = "timeout", _("Timeout")
    CONNECTION = "connection", _("Connection error")
    HTTP_ERROR = "http_error", _("HTTP error")
    MALFORMED = "malformed", _("Malformed response")
    NOT_FOUND = "not_found", _("Not found")

class PaymentCheck(models.Model):
    Source = CheckSource
    ErrorKind = CheckErrorKind
    attempt = models.ForeignKey(PaymentAttempt, on_delete=models.PROTECT, related_name="checks")
    source = models.CharField(_("source"), max_length=16, choices=CheckSource.choices)
    reported_status = models.CharField(_("reported status"), max_length=16, choices=AttemptStatus.choices, blank=True)
    reported_amount = models.DecimalField(_("reported amount"), **MONEY, null=True, blank=True)
    reported_currency = models.CharField(_("reported currency"), max_length=3, blank=True)
    failure_code = models.CharField(_("failure code"), max_length=64, blank=True)
    action_required = models.CharField(_("customer action required"), max_length=32, blank=True)
    error_kind = models.CharField(_("error"), max_length=16, choices=CheckErrorKind.choices, default=CheckErrorKind.NONE)
    error_message = models.TextField(_("error message"), blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), null=True, blank=True)
    response_excerpt = models.TextField(_("response excerpt"), blank=True)
    checked_at = models.DateTimeField(_("checked"), default=timezone.now)
    # Set when retention emptied the response excerpt and error message (orders.retention).
    response_pruned_at = models.DateTimeField(_("response pruned"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("payment check")
        verbose_name_plural = _("payment checks")
        ordering = ["-checked_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=CheckSource.values), name="check_source_valid"),
            models.CheckConstraint(condition=Q(error_kind__in=CheckErrorKind.values), name="check_error_kind_valid"),
            # A check either got an answer or recorded why it did not.
            models.CheckConstraint(
                condition=Q(error_kind="none", reported_status__in=AttemptStatus.values) | ~Q(error_kind="none"),
                name="check_answer_or_error",
            ),
        ]
        indexes = [
            models.Index(fields=["attempt", "-checked_at"], name="check_attempt_recent_idx"),
            models.Index(fields=["checked_at"], name="check_checked_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.attempt} @ {self.checked_at:%Y-%m-%d %H:%M:%S}"



class CallbackOutcome(models.TextChoices):
    RECEIVED = "received", _("Received")
    APPLIED = "applied", _("Applied")
    NO_CHANGE = "no_change", _("No change")
    REJECTED = "rejected", _("Rejected (signature)")
    RECHECK = "recheck", _("Re-check requested")
    FAILED = "failed", _("Failed")

class ProviderCallback(models.Model):
    Outcome = CallbackOutcome
    provider = models.CharField(_("provider"), max_length=32)
    event_id = models.CharField(_("event id"), max_length=128)
    received_at = models.DateTimeField(_("received"), default=timezone.now)
    headers = models.JSONField(_("headers (masked)"), default=dict, blank=True)
    body = models.TextField(_("raw body"), blank=True)
    signature_valid = models.BooleanField(_("signature valid"), default=False)
    attempt = models.ForeignKey(
        PaymentAttempt, on_delete=models.PROTECT, null=True, blank=True, related_name="callbacks"
    )
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=CallbackOutcome.choices, default=CallbackOutcome.RECEIVED)
    error = models.TextField(_("error"), blank=True)
    # Set when retention emptied the raw body and headers (orders.retention); the row stays, so
    # a redelivery still finds its (provider, event id) and changes nothing.
    body_pruned_at = models.DateTimeField(_("body pruned"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("provider callback")
        verbose_name_plural = _("provider callbacks")
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="callback_unique_event_per_provider"),
            models.CheckConstraint(condition=Q(outcome__in=CallbackOutcome.values), name="callback_outcome_valid"),
        ]
        indexes = [
            models.Index(fields=["received_at"], name="callback_received_idx"),
            models.Index(fields=["id"], name="callback_unprocessed_idx", condition=Q(processed_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.event_id}"



class EventKind(models.TextChoices):
    CREATED = "created", _("Order created")
    STATUS_CHANGED = "status_changed", _("Status changed")
    ATTEMPT_CREATED = "attempt_created", _("Payment attempt created")
    ATTEMPT_STATUS_CHANGED = "attempt_status_changed", _("Payment attempt status changed")
    FLAGGED = "flagged", _("Flagged as unreturned")
    DIAGNOSIS_CHANGED = "diagnosis_changed", _("Diagnosis changed")
    UNFLAGGED = "unflagged", _("No longer unreturned")
    REVIEW_REQUESTED = "review_requested", _("Needs review")
    CONFIRMATION_FAILED = "confirmation_failed", _("Confirmation failed")
    APPROVAL_REQUESTED = "approval_requested", _("Second approval requested")
    APPROVAL_DECIDED = "approval_decided", _("Second approval decided")
    ASSIGNED = "assigned", _("Assigned")
    RESULT_APPLIED = "result_applied", _("Provider result applied")
    ACCESS_REPORTED = "access_reported", _("Reported missing by a user")
    NOTE = "note", _("Staff note")


class EventActorKind(models.TextChoices):
    SYSTEM = "system", _("System")
    STAFF = "staff", _("Staff")
    MERCHANT = "merchant", _("Merchant")
    CUSTOMER = "customer", _("Customer")
    PROVIDER = "provider", _("Provider")

class OrderEvent(models.Model):
    Kind = EventKind
    ActorKind = EventActorKind
    # Indexed by event_order_recent_idx, which leads with order_id.
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="events", db_index=False)
    attempt = models.ForeignKey(PaymentAttempt, on_delete=models.PROTECT, null=True, blank=True, related_name="events")
    kind = models.CharField(_("kind"), max_length=32, choices=EventKind.choices)
    actor_kind = models.CharField(_("actor"), max_length=16, choices=EventActorKind.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    message = models.TextField(_("message"), blank=True)
    data = models.JSONField(_("data"), default=dict, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    class Meta:
        verbose_name = _("order event")
        verbose_name_plural = _("order events")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=EventKind.values), name="event_kind_valid"),
            models.CheckConstraint(condition=Q(actor_kind__in=EventActorKind.values), name="event_actor_kind_valid"),
        ]
        indexes = [models.Index(fields=["order", "-created_at"], name="event_order_recent_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.created_at:%Y-%m-%d %H:%M})"

    def save(self, *args, **kwargs) -> None:
        # The timeline is evidence: an event is written once and never edited.
        if self.pk is not None and not self._state.adding:
            raise ValueError("Order events are append-only.")
        # A new instance carrying an existing pk would otherwise become an UPDATE of that event.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")


class PaymentApproval(models.Model):
    """A mark-paid request above the merchant's limit, waiting for a second staff member."""

    Status = ApprovalStatus

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="approvals", verbose_name=_("order"))
    provider = models.CharField(_("provider"), max_length=32)
    provider_reference = models.CharField(_("provider reference"), max_length=128)
    amount = models.DecimalField(_("amount"), **MONEY)
    currency = models.CharField(_("currency"), max_length=3)
    reason = models.TextField(_("reason"))
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("requested by")
    )
    requested_at = models.DateTimeField(_("requested"), default=timezone.now)
    status = models.CharField(_("status"), max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        verbose_name=_("decided by"),
    )
    decided_at = models.DateTimeField(_("decided"), null=True, blank=True)
    decision_note = models.TextField(_("decision note"), blank=True)

    class Meta:
        verbose_name = _("mark-paid approval")
        verbose_name_plural = _("mark-paid approvals")
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=ApprovalStatus.values), name="approval_status_valid"),
            models.CheckConstraint(condition=~Q(reason=""), name="approval_reason_required"),
            # Four eyes: the person who asked never decides.
            models.CheckConstraint(
                condition=Q(decided_by__isnull=True) | ~Q(decided_by=models.F("requested_by")),
                name="approval_four_eyes",
            ),
            models.CheckConstraint(
                condition=Q(status=ApprovalStatus.PENDING, decided_by__isnull=True, decided_at__isnull=True)
                | (~Q(status=ApprovalStatus.PENDING) & Q(decided_by__isnull=False, decided_at__isnull=False)),
                name="approval_decision_consistent",
            ),
            models.UniqueConstraint(
                fields=["order"], condition=Q(status=ApprovalStatus.PENDING), name="approval_one_pending_per_order"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order} ({self.get_status_display()})"


class UnreturnedSnapshot(models.Model):
    """The unreturned backlog as the sweep last counted it: the dashboard's trend and the
    metrics read these instead of scanning orders."""

    taken_at = models.DateTimeField(_("taken"), default=timezone.now, db_index=True)
    total = models.PositiveIntegerField(_("unreturned"))
    needs_review = models.PositiveIntegerField(_("needs review"))
    by_cause = models.JSONField(_("by cause"), default=dict)
    by_category = models.JSONField(_("by category"), default=dict)
    by_provider = models.JSONField(_("by provider"), default=dict)
    by_age = models.JSONField(_("by age"), default=dict)

    class Meta:
        verbose_name = _("unreturned snapshot")
        verbose_name_plural = _("unreturned snapshots")
        ordering = ["-taken_at"]


class IdempotencyKeyStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", _("in progress")
    DONE = "done", _("done")


class IdempotencyKey(models.Model):
    """One `Idempotency-Key` an API client sent, and the response it got (see `orders.api.idempotency`).

    The (owner, key) constraint is the lock: of several concurrent requests with one key, exactly one
    inserts its row and runs; the others find the row and are answered from it."""

    Status = IdempotencyKeyStatus

    # The unique (owner, key) index serves lookups by owner: no index of its own.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False, verbose_name=_("owner")
    )
    key = models.CharField(_("key"), max_length=255)
    method = models.CharField(_("method"), max_length=10)
    path = models.CharField(_("path"), max_length=2000)
    request_fingerprint = models.CharField(_("request fingerprint"), max_length=64)
    status = models.CharField(_("status"), max_length=16, choices=IdempotencyKeyStatus.choices,
                              default=IdempotencyKeyStatus.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    response_body = models.TextField(_("response body"), blank=True, default="")
    response_headers = models.JSONField(_("response headers"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique_per_owner"),
            models.CheckConstraint(
                condition=Q(status=IdempotencyKeyStatus.IN_PROGRESS)
                | Q(status=IdempotencyKeyStatus.DONE, response_status__isnull=False, completed_at__isnull=False),
                name="idempotency_key_done_has_response",
            ),
        ]
        # The purge deletes by age.
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created_idx")]

    def __str__(self) -> str:
        return f"{self.key} ({self.method} {self.path})"


class TelemetryCounter(models.Model):
    """One monotonically increasing counter of the engine (checks, callbacks, latency buckets)
    for one label set, kept in the database so that every web process scraping `/metrics` and
    every worker adding to it see the same value (`orders.telemetry`)."""

    name = models.CharField(_("name"), max_length=64)
    # The labels as canonical JSON (sorted keys): the unique key the upsert conflicts on.
    labels_key = models.CharField(_("labels key"), max_length=255)
    labels = models.JSONField(_("labels"), default=dict)
    value = models.BigIntegerField(_("value"), default=0)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("telemetry counter")
        verbose_name_plural = _("telemetry counters")
        constraints = [
            models.UniqueConstraint(fields=["name", "labels_key"], name="telemetry_counter_unique_labels"),
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels_key} = {self.value}"


class RetentionRun(models.Model):
    """One run of the journal pruning (`orders.retention.prune_journals`): when, up to which
    moment each journal was pruned, and how many rows lost their payloads. The latest complete
    run's cutoffs are where the next run starts, so old, already pruned rows are not read again."""

    started_at = models.DateTimeField(_("started"), default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    callback_cutoff = models.DateTimeField(_("callbacks received before"))
    check_cutoff = models.DateTimeField(_("checks made before"))
    # Everything received (checked) before these is pruned; null until a run got through.
    callbacks_pruned_through = models.DateTimeField(_("callbacks pruned through"), null=True, blank=True)
    checks_pruned_through = models.DateTimeField(_("checks pruned through"), null=True, blank=True)
    callbacks_pruned = models.PositiveIntegerField(_("callback bodies pruned"), default=0)
    checks_pruned = models.PositiveIntegerField(_("check responses pruned"), default=0)
    complete = models.BooleanField(_("complete"), default=False)

    class Meta:
        verbose_name = _("retention run")
        verbose_name_plural = _("retention runs")
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M}: {self.callbacks_pruned} + {self.checks_pruned}"
