"""Support: tickets linked to orders, their conversation and history, SLA targets, saved
replies, and the outbox of customer notifications.

Writes go through `support.services` (tickets, messages) and `support.notifications`
(the outbox); the admin and the pages only call them.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from orders.causes import Cause
from orders.models import EventActorKind, Merchant, Order


class TicketStatus(models.TextChoices):
    NEW = "new", pgettext_lazy("ticket status", "new")
    OPEN = "open", pgettext_lazy("ticket status", "open")
    WAITING_ON_CUSTOMER = "waiting_on_customer", pgettext_lazy("ticket status", "waiting on customer")
    WAITING_ON_MERCHANT = "waiting_on_merchant", pgettext_lazy("ticket status", "waiting on merchant")
    ESCALATED = "escalated", pgettext_lazy("ticket status", "escalated")
    RESOLVED = "resolved", pgettext_lazy("ticket status", "resolved")
    CLOSED = "closed", pgettext_lazy("ticket status", "closed")


# A ticket in one of these still needs someone; at most one such ticket per order.
TICKET_OPEN_STATUSES = frozenset(
    {
        TicketStatus.NEW,
        TicketStatus.OPEN,
        TicketStatus.WAITING_ON_CUSTOMER,
        TicketStatus.WAITING_ON_MERCHANT,
        TicketStatus.ESCALATED,
    }
)
TICKET_DONE_STATUSES = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED})


class TicketPriority(models.TextChoices):
    LOW = "low", _("low")
    NORMAL = "normal", _("normal")
    HIGH = "high", _("high")
    URGENT = "urgent", _("urgent")


# Escalation raises the priority one step, up to urgent.
PRIORITY_ORDER = (TicketPriority.LOW, TicketPriority.NORMAL, TicketPriority.HIGH, TicketPriority.URGENT)


class TicketSource(models.TextChoices):
    AUTO = "auto", _("automatic")
    CUSTOMER = "customer", _("customer")
    STAFF = "staff", _("staff")
    MERCHANT = "merchant", _("merchant")
    API = "api", _("API")


OTHER_CATEGORY = "other"
TICKET_CATEGORY_CHOICES = [*Cause.choices, (OTHER_CATEGORY, _("other"))]


class Ticket(models.Model):
    Status = TicketStatus
    Priority = TicketPriority
    Source = TicketSource

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="tickets", verbose_name=_("merchant"))
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, null=True, blank=True, related_name="tickets", verbose_name=_("order")
    )
    subject = models.CharField(_("subject"), max_length=200)
    category = models.CharField(_("category"), max_length=32, choices=TICKET_CATEGORY_CHOICES, default=OTHER_CATEGORY)
    status = models.CharField(_("status"), max_length=24, choices=TicketStatus.choices, default=TicketStatus.NEW)
    priority = models.CharField(
        _("priority"), max_length=8, choices=TicketPriority.choices, default=TicketPriority.NORMAL
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="assigned_tickets",
        verbose_name=_("assignee"),
    )
    source = models.CharField(_("source"), max_length=8, choices=TicketSource.choices, default=TicketSource.STAFF)
    # The customer this ticket talks to (public replies are emailed there).
    customer_name = models.CharField(_("customer name"), max_length=200, blank=True)
    customer_email = models.EmailField(_("customer email"), blank=True)

    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    # SLA: due times move forward by the time spent waiting on the customer (the clock pauses).
    first_response_due_at = models.DateTimeField(_("first response due"), null=True, blank=True)
    resolution_due_at = models.DateTimeField(_("resolution due"), null=True, blank=True)
    sla_paused_at = models.DateTimeField(_("SLA clock paused since"), null=True, blank=True)
    first_responded_at = models.DateTimeField(_("first responded"), null=True, blank=True)
    escalated_at = models.DateTimeField(_("escalated"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)
    reopened_count = models.PositiveSmallIntegerField(_("times reopened"), default=0)

    class Meta:
        verbose_name = _("ticket")
        verbose_name_plural = _("tickets")
        ordering = ["-created_at", "-id"]
        permissions = [
            ("reply_ticket", _("Can reply to customers and add internal notes")),
            ("manage_saved_replies", _("Can manage saved replies")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["order"],
                condition=Q(status__in=sorted(TICKET_OPEN_STATUSES)),
                name="ticket_one_open_per_order",
            ),
            models.CheckConstraint(condition=Q(status__in=TicketStatus.values), name="ticket_status_valid"),
            models.CheckConstraint(condition=Q(priority__in=TicketPriority.values), name="ticket_priority_valid"),
            models.CheckConstraint(condition=Q(source__in=TicketSource.values), name="ticket_source_valid"),
        ]
        indexes = [
            models.Index(
                fields=["status", "resolution_due_at"],
                name="ticket_open_due_idx",
                condition=Q(status__in=sorted(TICKET_OPEN_STATUSES)),
            ),
            models.Index(fields=["assignee", "status"], name="ticket_assignee_idx"),
            models.Index(fields=["merchant", "-created_at"], name="ticket_merchant_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"

    @property
    def is_open(self) -> bool:
        return self.status in TICKET_OPEN_STATUSES


class MessageVisibility(models.TextChoices):
    """Who reads a message: PUBLIC is the conversation with the customer (staff replies are
    emailed); MERCHANT is between our staff and the merchant's staff, never shown or sent to
    the customer; INTERNAL is for our staff alone."""

    PUBLIC = "public", _("public reply")
    MERCHANT = "merchant", _("merchant note")
    INTERNAL = "internal", _("internal note")


# What a merchant's staff read of a ticket's conversation (the portal and the API).
MERCHANT_VISIBILITIES = frozenset({MessageVisibility.PUBLIC, MessageVisibility.MERCHANT})


class TicketMessage(models.Model):
    """One message of a ticket's conversation. Append-only."""

    Visibility = MessageVisibility

    ticket = models.ForeignKey(Ticket, on_delete=models.PROTECT, related_name="messages", verbose_name=_("ticket"))
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("author"),
    )
    # Set when the author is a customer (no user) or the system.
    author_email = models.EmailField(_("author email"), blank=True)
    author_name = models.CharField(_("author name"), max_length=200, blank=True)
    visibility = models.CharField(
        _("visibility"), max_length=8, choices=MessageVisibility.choices, default=MessageVisibility.INTERNAL
    )
    body = models.TextField(_("message"))
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    class Meta:
        verbose_name = _("ticket message")
        verbose_name_plural = _("ticket messages")
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(visibility__in=MessageVisibility.values), name="message_visibility_valid"),
        ]
        indexes = [models.Index(fields=["ticket", "created_at"], name="message_ticket_time_idx")]

    def __str__(self) -> str:
        return f"{self.get_visibility_display()} on #{self.ticket_id}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("Ticket messages are append-only.")
        super().save(*args, **kwargs)


class TicketEventKind(models.TextChoices):
    CREATED = "created", pgettext_lazy("ticket event", "created")
    STATUS_CHANGED = "status_changed", pgettext_lazy("ticket event", "status changed")
    PRIORITY_CHANGED = "priority_changed", pgettext_lazy("ticket event", "priority changed")
    ASSIGNEE_CHANGED = "assignee_changed", pgettext_lazy("ticket event", "assignee changed")
    ESCALATED = "escalated", pgettext_lazy("ticket event", "escalated")
    REOPENED = "reopened", pgettext_lazy("ticket event", "reopened")


class TicketEvent(models.Model):
    """Append-only history of a ticket's status, priority and assignee."""

    Kind = TicketEventKind

    ticket = models.ForeignKey(Ticket, on_delete=models.PROTECT, related_name="events", verbose_name=_("ticket"))
    kind = models.CharField(_("kind"), max_length=20, choices=TicketEventKind.choices)
    actor_kind = models.CharField(_("actor"), max_length=16, choices=EventActorKind.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    from_value = models.CharField(_("from"), max_length=150, blank=True)
    to_value = models.CharField(_("to"), max_length=150, blank=True)
    message = models.TextField(_("message"), blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    class Meta:
        verbose_name = _("ticket event")
        verbose_name_plural = _("ticket events")
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=TicketEventKind.values), name="ticket_event_kind_valid"),
            models.CheckConstraint(condition=Q(actor_kind__in=EventActorKind.values),
                                   name="ticket_event_actor_kind_valid"),
        ]
        indexes = [models.Index(fields=["ticket", "created_at"], name="ticket_event_time_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on #{self.ticket_id}"

    def value_label(self, value: str) -> str:
        """`from_value` or `to_value` in words: a status or a priority by its label (the
        assignee and free text as they are)."""
        if self.kind in (TicketEventKind.CREATED, TicketEventKind.STATUS_CHANGED, TicketEventKind.REOPENED):
            return str(TicketStatus(value).label) if value in TicketStatus.values else value
        if self.kind in (TicketEventKind.PRIORITY_CHANGED, TicketEventKind.ESCALATED):
            return str(TicketPriority(value).label) if value in TicketPriority.values else value
        return value


class SlaTarget(models.Model):
    """How fast tickets of a priority must be answered and resolved. A row without merchant is
    the default; a merchant's own row overrides it. Without any row the built-in defaults of
    `support.sla` apply."""

    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, null=True, blank=True, related_name="sla_targets",
        verbose_name=_("merchant"), help_text=_("Empty: the default for every merchant without its own target."),
    )
    priority = models.CharField(_("priority"), max_length=8, choices=TicketPriority.choices)
    first_response = models.DurationField(_("first response within"))
    resolution = models.DurationField(_("resolution within"))

    class Meta:
        verbose_name = _("SLA target")
        verbose_name_plural = _("SLA targets")
        constraints = [
            models.UniqueConstraint(fields=["merchant", "priority"], name="sla_one_per_merchant_priority"),
            models.UniqueConstraint(
                fields=["priority"], condition=Q(merchant__isnull=True), name="sla_one_default_per_priority"
            ),
            models.CheckConstraint(condition=Q(first_response__gt=timedelta(0)), name="sla_first_response_positive"),
            models.CheckConstraint(condition=Q(resolution__gte=models.F("first_response")), name="sla_resolution_after"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant or _('default')} / {self.get_priority_display()}"


class SavedReply(models.Model):
    """A reply text staff insert with one click, offered for tickets of its category."""

    title = models.CharField(_("title"), max_length=120)
    category = models.CharField(
        _("category"), max_length=32, choices=TICKET_CATEGORY_CHOICES, blank=True,
        help_text=_("Empty: offered for every category."),
    )
    body = models.TextField(_("text"))
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("saved reply")
        verbose_name_plural = _("saved replies")
        ordering = ["category", "title"]

    def __str__(self) -> str:
        return self.title


class NotificationKind(models.TextChoices):
    PAYMENT_CONFIRMED = "payment_confirmed", _("payment confirmed after a delay")
    PAYMENT_DECLINED = "payment_declined", _("payment declined")
    ACTION_NEEDED = "action_needed", _("action needed")
    ORDER_CANCELLED = "order_cancelled", _("order cancelled")
    ORDER_EXPIRED = "order_expired", _("order expired")
    TICKET_REPLY = "ticket_reply", _("ticket reply")


class NotificationStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    SENDING = "sending", _("sending")
    SENT = "sent", _("sent")
    FAILED = "failed", _("failed")  # gave up after the last retry


class Notification(models.Model):
    """The outbox: one row per customer email to send. `dedupe_key` is unique, so one event
    never produces two emails however often it is reported."""

    Kind = NotificationKind
    Status = NotificationStatus

    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="notifications", verbose_name=_("order")
    )
    kind = models.CharField(_("kind"), max_length=20, choices=NotificationKind.choices)
    # "<kind>:<order id>" for order events, "ticket_reply:<message id>" for replies.
    dedupe_key = models.CharField(_("event key"), max_length=80, unique=True)
    ticket_message = models.ForeignKey(
        TicketMessage, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications"
    )
    recipient = models.EmailField(_("recipient"))
    language = models.CharField(_("language"), max_length=10, default="en")
    subject = models.CharField(_("subject"), max_length=200, blank=True)
    body = models.TextField(_("body"), blank=True)
    status = models.CharField(
        _("status"), max_length=8, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True, default=timezone.now)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)

    class Meta:
        verbose_name = _("customer notification")
        verbose_name_plural = _("customer notifications")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=NotificationKind.values), name="notification_kind_valid"),
            models.CheckConstraint(
                condition=Q(status__in=NotificationStatus.values), name="notification_status_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="notification_due_idx",
                condition=Q(status__in=["pending", "sending"]),
            ),
            models.Index(fields=["order", "-created_at"], name="notification_order_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.recipient}"
