"""The one FilterSet for tickets: the REST API uses it, and the merchant portal may.

Parameter names follow the orders' (`status` repeated, `merchant` as a code,
`created_after` / `created_before`), so links and habits carry over.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field

from orders.filters import ANY, TrueFalseFilter
from support.models import TICKET_CATEGORY_CHOICES, TICKET_OPEN_STATUSES, Ticket, TicketPriority, TicketStatus

# Ids are positive 64-bit integers; a larger number is refused as invalid, not sent to the database.
MAX_ID = 2**63 - 1
# An empty value means "any" (HTML forms send it), as for the choices (`ANY`); the schema says so.
_EMPTY = {"type": "string", "enum": [""]}


class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _or_empty(filter_, schema: dict):
    """`filter_` with its schema stated: `schema`, or empty for "any", and the filter's label."""
    return extend_schema_field({"oneOf": [schema, _EMPTY], "description": filter_.label})(filter_)


class TicketFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=TicketStatus.choices, label=_("Status (repeat the parameter for several).")
    )
    open = TrueFalseFilter(
        method="filter_open", label=_("Open (new, open, waiting, escalated) or done (resolved, closed).")
    )
    priority = django_filters.ChoiceFilter(choices=[ANY, *TicketPriority.choices], label=_("Priority."))
    order = _or_empty(
        IdFilter(field_name="order_id", min_value=1, max_value=MAX_ID, label=_("The order's id.")),
        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    )
    merchant = django_filters.CharFilter(method="filter_merchant", max_length=32, label=_("Merchant code."))
    category = django_filters.ChoiceFilter(choices=[ANY, *TICKET_CATEGORY_CHOICES], label=_("Category."))
    created_after = _or_empty(
        django_filters.IsoDateTimeFilter(
            field_name="created_at", lookup_expr="gte", label=_("Opened at or after (ISO 8601).")
        ),
        {"type": "string", "format": "date-time"},
    )
    created_before = _or_empty(
        django_filters.IsoDateTimeFilter(
            field_name="created_at", lookup_expr="lt", label=_("Opened before (ISO 8601).")
        ),
        {"type": "string", "format": "date-time"},
    )

    class Meta:
        model = Ticket
        fields: list[str] = []

    def filter_open(self, queryset: QuerySet, name: str, value) -> QuerySet:
        if value is None:
            return queryset
        statuses = sorted(TICKET_OPEN_STATUSES)
        return queryset.filter(status__in=statuses) if value else queryset.exclude(status__in=statuses)

    def filter_merchant(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(merchant__code=value) if value else queryset
