"""Serializers: shapes and input checks only. Writes go through `orders.services` in the views."""

from __future__ import annotations

import copy
from decimal import Decimal

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.relations import ManyRelatedField

from orders.causes import Category, Cause
from orders.models import Order, PaymentApproval, PaymentAttempt
from orders.states import AttemptStatus, OrderStatus


class DecimalStringField(serializers.DecimalField):
    """Money goes in and out as a decimal string ("128.00"); a JSON number would pass through a float."""

    default_error_messages = {"not_string": _('Send the amount as a string, for example "128.00".')}

    def __init__(self, **kwargs) -> None:
        # Places per currency and the column's range are the service's checks (orders.services).
        kwargs.setdefault("max_digits", 18)
        kwargs.setdefault("decimal_places", None)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_string")
        return super().to_internal_value(data.strip())


class FieldsBuiltOnce:
    """Build a serializer class's fields once, not for every instance.

    DRF builds every field anew for each serializer instance: a ModelSerializer maps each model
    field again, a plain Serializer deep-copies its declared fields (which re-runs each field's
    `__init__`). For the order serializers that was most of an answer's cost (about 0.7 ms of
    0.8 for one order). Here the first instance of a class keeps what `get_fields()` built,
    unbound; every instance gets copies, which `bind()` then ties to it:

    - a plain field is copied shallowly: its settings (labels, validators, error messages, lazy
      translations) are shared and only read, and binding sets the copy's own name and parent;
    - a nested serializer or a many-related field is deep-copied, as DRF does, because it holds
      a child whose parent is itself.

    Only for serializers whose fields depend on nothing but the class (no `get_fields`
    override that reads the context or the request)."""

    def get_fields(self) -> dict:
        cls = type(self)
        built = cls.__dict__.get("_fields_built_once")
        if built is None:
            built = super().get_fields()
            cls._fields_built_once = built  # two threads may both build: same result, either wins
        return {
            name: copy.deepcopy(field) if isinstance(field, serializers.BaseSerializer | ManyRelatedField)
            else _shallow_copy(field)
            for name, field in built.items()
        }


def _shallow_copy(field: serializers.Field) -> serializers.Field:
    """`copy.copy(field)` without the pickle protocol's detour (a third of the time)."""
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


# --- errors (documentation of the one error shape) ---------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text=_("Stable, for programs: for example invalid, not_found, throttled."))
    message = serializers.CharField(help_text=_("For people, in the request's language."))
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text=_("Field name to its problems; empty when the error is not about one field."),
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class DuplicateErrorSerializer(ErrorSerializer):
    existing_id = serializers.IntegerField(help_text=_("The id of the order that already has this reference."))


# --- orders -------------------------------------------------------------------------------------


class OrderSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """An order in lists: no per-row queries beyond the merchant, which the view joins."""

    merchant = serializers.SlugRelatedField(slug_field="code", read_only=True)
    amount = DecimalStringField(read_only=True)
    captured_amount = DecimalStringField(read_only=True)
    unreturned = serializers.BooleanField(source="is_unreturned", read_only=True)
    status = serializers.ChoiceField(choices=OrderStatus.choices, read_only=True)
    stuck_cause = serializers.ChoiceField(choices=[("", ""), *Cause.choices], read_only=True)
    stuck_category = serializers.ChoiceField(choices=[("", ""), *Category.choices], read_only=True)

    class Meta:
        model = Order
        fields = [
            "id", "merchant", "reference", "status", "amount", "captured_amount", "currency",
            "customer_name", "customer_email", "customer_phone", "shipping_address",
            "submitted_at", "status_changed_at", "updated_at",
            "unreturned", "stuck_since", "stuck_cause", "stuck_category", "needs_review", "resolved_at",
        ]
        read_only_fields = fields


class OrderCreateSerializer(FieldsBuiltOnce, serializers.Serializer):
    merchant = serializers.SlugField(
        max_length=32, required=False,
        help_text=_("Merchant code. Required for staff and for users of several merchants."),
    )
    reference = serializers.CharField(max_length=64, help_text=_("The merchant's own order number."))
    amount = DecimalStringField(help_text=_('A decimal string, for example "128.00".'))
    currency = serializers.CharField(min_length=3, max_length=3, help_text=_("ISO 4217 code, for example CNY."))
    customer_name = serializers.CharField(max_length=200)
    customer_email = serializers.EmailField(max_length=254)
    customer_phone = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    shipping_address = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def validate_amount(self, value: Decimal) -> Decimal:
        if value <= 0:
            raise serializers.ValidationError(_("The amount must be greater than zero."))
        return value

    def validate_currency(self, value: str) -> str:
        # Whether the code exists is the service's check (orders.currencies); case is ours.
        return value.upper()


class DiagnosisSerializer(FieldsBuiltOnce, serializers.Serializer):
    cause = serializers.ChoiceField(choices=Cause.choices)
    cause_label = serializers.CharField()
    category = serializers.ChoiceField(choices=Category.choices)
    category_label = serializers.CharField()
    summary = serializers.CharField()
    recommended_action = serializers.CharField()
    automatic = serializers.CharField(help_text=_("What happens next without anyone acting."))
    needs_review = serializers.BooleanField()
    next_check_at = serializers.DateTimeField(
        allow_null=True, help_text=_("When the open payment attempt is checked next automatically.")
    )


class PaymentAttemptSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    amount = DecimalStringField(read_only=True)
    status = serializers.ChoiceField(choices=AttemptStatus.choices, read_only=True)

    class Meta:
        model = PaymentAttempt
        fields = [
            "id", "provider", "provider_reference", "amount", "currency", "status", "failure_code",
            "action_required", "created_at", "status_changed_at", "next_check_at", "check_count", "last_checked_at",
        ]
        read_only_fields = fields


class PaymentAttemptCreateSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=32)
    provider_reference = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")
    status = serializers.ChoiceField(
        choices=[(s, AttemptStatus(s).label) for s in (AttemptStatus.INITIATED, AttemptStatus.PENDING,
                                                        AttemptStatus.UNKNOWN)],
        default=AttemptStatus.INITIATED,
    )


class OrderDetailSerializer(OrderSerializer):
    """One order with its payment attempts and its diagnosis (set by the view in the context)."""

    attempts = PaymentAttemptSerializer(many=True, read_only=True)
    diagnosis = serializers.SerializerMethodField()

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "attempts", "diagnosis"]
        read_only_fields = fields

    @extend_schema_field(DiagnosisSerializer(allow_null=True))
    def get_diagnosis(self, order: Order) -> dict | None:
        diagnosis = self.context.get("diagnosis", {}).get(order.pk)
        return DiagnosisSerializer(diagnosis).data if diagnosis else None


class TimelineEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.CharField(help_text=_("event, note, check, callback, or another source's kind."))
    title = serializers.CharField()
    body = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(allow_blank=True)
    internal = serializers.BooleanField(help_text=_("Staff-only entries; never shown to merchant users."))
    tone = serializers.CharField(allow_blank=True)
    data = serializers.DictField()


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text=_("Kept on the order's timeline."))


class MarkPaidSerializer(ReasonSerializer):
    provider_reference = serializers.CharField(
        max_length=128, help_text=_("The payment's reference at the provider, as evidence that the customer paid.")
    )
    provider = serializers.CharField(
        max_length=32, required=False, allow_blank=True, default="",
        help_text=_("Leave empty: the provider is found from the reference or the order's attempts."),
    )


class ApprovalSerializer(serializers.ModelSerializer):
    amount = DecimalStringField(read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PaymentApproval
        fields = ["id", "status", "provider", "provider_reference", "amount", "currency", "reason", "requested_by",
                  "requested_at"]
        read_only_fields = fields


class MarkPaidResultSerializer(serializers.Serializer):
    applied = serializers.BooleanField(help_text=_("False: above the merchant's limit, a second person must approve."))
    approval = ApprovalSerializer(allow_null=True)
    order = OrderDetailSerializer()


class CheckItemSerializer(serializers.Serializer):
    attempt_id = serializers.IntegerField()
    provider = serializers.CharField()
    reference = serializers.CharField(allow_blank=True)
    reported_status = serializers.CharField(allow_blank=True)
    changed = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)


class CheckNowResultSerializer(serializers.Serializer):
    checked = serializers.IntegerField()
    changed = serializers.IntegerField()
    errors = serializers.IntegerField()
    items = CheckItemSerializer(many=True)
    order = OrderDetailSerializer()


class CountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    needs_review = serializers.IntegerField()
    by_cause = serializers.DictField(child=serializers.IntegerField())
    by_category = serializers.DictField(child=serializers.IntegerField())
    by_provider = serializers.DictField(child=serializers.IntegerField())
    by_age = serializers.DictField(child=serializers.IntegerField())

