"""Ticket serializers: shapes and input checks only. Writes go through `support.services`."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from orders.api.serializers import ErrorSerializer
from support.filters import MAX_ID
from support.models import (
    MERCHANT_VISIBILITIES,
    OTHER_CATEGORY,
    TICKET_CATEGORY_CHOICES,
    MessageVisibility,
    Ticket,
    TicketMessage,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from support.services import MAX_MESSAGE_LENGTH

AUTHOR_KINDS = [("staff", _("staff")), ("merchant", _("merchant")), ("customer", _("customer")),
                ("system", _("system"))]


class TicketMessageSerializer(serializers.ModelSerializer):
    """One message; the author's user is joined by `ticket_messages_visible_to`."""

    visibility = serializers.ChoiceField(choices=MessageVisibility.choices, read_only=True)
    author = serializers.SerializerMethodField(
        help_text=_("The username for our staff and the merchant's, the name for a customer, "
                    "or \"system\" for automatic messages.")
    )
    author_kind = serializers.SerializerMethodField()

    class Meta:
        model = TicketMessage
        fields = ["id", "visibility", "author", "author_kind", "body", "created_at"]
        read_only_fields = fields

    @staticmethod
    def _kind(message: TicketMessage) -> str:
        if message.author_user_id is not None:
            return "staff" if message.author_user.is_staff or message.author_user.is_superuser else "merchant"
        return "customer" if message.author_email else "system"

    def get_author(self, message: TicketMessage) -> str:
        kind = self._kind(message)
        if kind in ("staff", "merchant"):
            return message.author_user.get_username()
        if kind == "customer":
            return message.author_name or message.author_email
        return "system"

    @extend_schema_field(serializers.ChoiceField(choices=AUTHOR_KINDS))
    def get_author_kind(self, message: TicketMessage) -> str:
        return self._kind(message)


class TicketSerializer(serializers.ModelSerializer):
    """A ticket in lists: the view joins the merchant and the order and annotates
    `message_count` (the messages the caller may read), so a row costs no query."""

    merchant = serializers.SlugRelatedField(slug_field="code", read_only=True)
    order = serializers.IntegerField(source="order_id", read_only=True, allow_null=True,
                                     help_text=_("The order's id; null for a ticket about the merchant alone."))
    order_reference = serializers.CharField(source="order.reference", read_only=True, allow_null=True)
    category = serializers.ChoiceField(choices=TICKET_CATEGORY_CHOICES, read_only=True)
    category_label = serializers.CharField(source="get_category_display", read_only=True)
    status = serializers.ChoiceField(choices=TicketStatus.choices, read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    priority = serializers.ChoiceField(choices=TicketPriority.choices, read_only=True)
    source = serializers.ChoiceField(choices=TicketSource.choices, read_only=True)
    message_count = serializers.IntegerField(read_only=True, help_text=_("Messages you can read."))

    class Meta:
        model = Ticket
        fields = [
            "id", "merchant", "order", "order_reference", "subject", "category", "category_label",
            "status", "status_label", "priority", "source", "created_at", "updated_at",
            "first_response_due_at", "resolution_due_at", "resolved_at", "message_count",
        ]
        read_only_fields = fields


class TicketDetailSerializer(TicketSerializer):
    """One ticket with the conversation the caller may read (set by the view in the context),
    oldest first."""

    messages = serializers.SerializerMethodField()

    class Meta(TicketSerializer.Meta):
        fields = [*TicketSerializer.Meta.fields, "messages"]
        read_only_fields = fields

    @extend_schema_field(TicketMessageSerializer(many=True))
    def get_messages(self, ticket: Ticket) -> list[dict]:
        return TicketMessageSerializer(self.context.get("messages", []), many=True).data


# --- input ---------------------------------------------------------------------------------------


class VisibilityField(serializers.ChoiceField):
    """public or merchant for merchant users; internal as well for our staff. The view gives
    the context's `back_office`."""

    default_error_messages = {
        "not_yours": _("Merchant users write public replies or merchant notes, not internal notes."),
    }

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", _(
            "public (the conversation with the customer: emailed to them), merchant (between our staff "
            "and the merchant's) or, for our staff only, internal. Default: merchant for merchant users, "
            "internal for staff."
        ))
        super().__init__(choices=MessageVisibility.choices, required=False, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value not in MERCHANT_VISIBILITIES and not self.context.get("back_office"):
            self.fail("not_yours")
        return value


class _TextPattern(RegexValidator):
    """The text's pattern, stated in the schema: no NUL character (the database cannot store it)
    and, unless blank is allowed, something besides spaces. A NUL is reported by DRF's own
    validator, so this one only speaks about blank text."""

    def __call__(self, value) -> None:
        if "\x00" not in str(value):
            super().__call__(value)


class UntrimmedCharField(serializers.CharField):
    """Text that is not trimmed before the length check, so the limit is the one the schema
    states; the service strips it when it stores it."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("trim_whitespace", False)
        if kwargs.get("allow_blank"):
            pattern = _TextPattern(r"^[^\x00]*$")
        else:
            pattern = _TextPattern(r"^[^\x00]*[^\s\x00][^\x00]*$", _("Write something, not only spaces."),
                                   code="blank")
        super().__init__(validators=[*kwargs.pop("validators", []), pattern], **kwargs)


class TicketCreateSerializer(serializers.Serializer):
    order = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_ID,
        help_text=_("The order's id, when the ticket is about an order; its merchant is the ticket's."),
    )
    merchant = serializers.SlugField(
        max_length=32, required=False,
        help_text=_("Merchant code. Needed without an order, for staff and for users of several merchants."),
    )
    subject = UntrimmedCharField(max_length=200)
    category = serializers.ChoiceField(choices=TICKET_CATEGORY_CHOICES, default=OTHER_CATEGORY)
    priority = serializers.ChoiceField(choices=TicketPriority.choices, default=TicketPriority.NORMAL)
    message = UntrimmedCharField(
        max_length=MAX_MESSAGE_LENGTH, required=False, allow_blank=True, default="",
        help_text=_("The first message, optional."),
    )
    visibility = VisibilityField()


class TicketMessageCreateSerializer(serializers.Serializer):
    body = UntrimmedCharField(max_length=MAX_MESSAGE_LENGTH)
    visibility = VisibilityField()


class TicketConflictErrorSerializer(ErrorSerializer):
    existing_id = serializers.IntegerField(help_text=_("The id of the order's open ticket."))
