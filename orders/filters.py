"""The one FilterSet for orders: the REST API uses it, and the merchant portal will.

Parameter names follow the staff worklist's where both exist (`unreturned`, `merchant` as a
code, `provider`, `age`), so links and habits carry over.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from orders.causes import Category, Cause
from orders.models import Order, PaymentAttempt
from orders.snapshots import AGE_BUCKETS, age_bucket_q
from orders.states import OrderStatus

AGE_CHOICES = [
    ("lt15m", _("less than 15 minutes")),
    ("15m-1h", _("15 minutes to 1 hour")),
    ("1h-6h", _("1 to 6 hours")),
    ("6h-24h", _("6 to 24 hours")),
    ("gt24h", _("more than 24 hours")),
]


# An empty value means "any" (HTML forms send it); listed, so the schema says so too.
ANY = ("", _("any"))


class _TrueFalseSelect(forms.NullBooleanSelect):
    """`true` / `false` (any case); absent or `unknown` (the portal's "any") mean no filter.
    Anything else, empty included, reaches the field as typed to be refused, where Django's
    select would quietly read it as "any"."""

    def value_from_datadict(self, data, files, name):
        value = data.get(name)
        if value is None or value == "unknown":
            return None
        return {"true": True, "false": False}.get(str(value).lower(), value)


class _TrueFalseField(forms.NullBooleanField):
    widget = _TrueFalseSelect
    default_error_messages = {"invalid": _("Use true or false.")}

    def to_python(self, value):
        if value is None or isinstance(value, bool):
            return value
        raise forms.ValidationError(self.error_messages["invalid"], code="invalid")


class TrueFalseFilter(django_filters.BooleanFilter):
    field_class = _TrueFalseField


class OrderFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=OrderStatus.choices, label=_("Status (repeat the parameter for several).")
    )
    unreturned = TrueFalseFilter(method="filter_unreturned", label=_("Unreturned (true or false)."))
    cause = django_filters.ChoiceFilter(choices=[ANY, *Cause.choices], method="filter_cause", label=_("Cause of an unreturned order."))
    category = django_filters.ChoiceFilter(
        choices=[ANY, *Category.choices], method="filter_category", label=_("Category of the cause.")
    )
    age = django_filters.ChoiceFilter(choices=[ANY, *AGE_CHOICES], method="filter_age", label=_("Unreturned for (age bucket)."))
    provider = django_filters.CharFilter(
        method="filter_provider", max_length=32, label=_("Orders with a payment attempt at this provider.")
    )
    merchant = django_filters.CharFilter(method="filter_merchant", max_length=32, label=_("Merchant code."))
    created_after = django_filters.IsoDateTimeFilter(
        field_name="submitted_at", lookup_expr="gte", label=_("Submitted at or after (ISO 8601).")
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="submitted_at", lookup_expr="lt", label=_("Submitted before (ISO 8601).")
    )
    search = django_filters.CharFilter(
        method="filter_search", max_length=254, label=_("Exact order reference or customer email.")
    )

    class Meta:
        model = Order
        fields: list[str] = []

    def filter_unreturned(self, queryset: QuerySet, name: str, value) -> QuerySet:
        if value is None:
            return queryset
        return queryset.filter(stuck_since__isnull=not value)

    # A cause or category is only set on flagged orders (a check constraint says so); saying
    # `stuck_since IS NOT NULL` as well lets the partial indexes on flagged orders serve it.
    def filter_cause(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(stuck_since__isnull=False, stuck_cause=value) if value else queryset

    def filter_category(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(stuck_since__isnull=False, stuck_category=value) if value else queryset

    def filter_age(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value in AGE_BUCKETS:
            return queryset.filter(age_bucket_q(value, now=timezone.now()))
        return queryset

    def filter_provider(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if not value:
            return queryset
        return queryset.filter(pk__in=PaymentAttempt.objects.filter(provider=value).values("order_id"))

    def filter_merchant(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(merchant__code=value) if value else queryset

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        if not value:
            return queryset
        # Two indexed equality lookups on one table (PostgreSQL combines them with a BitmapOr).
        return queryset.filter(Q(reference=value) | Q(customer_email=value))
