"""The portal's forms. They check input only; every change is made by a service."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from orders.causes import Category, Cause
from orders.filters import AGE_CHOICES, OrderFilter
from orders.models import MembershipRole, Order
from support.models import OTHER_CATEGORY, TICKET_CATEGORY_CHOICES, MessageVisibility, TicketPriority
from support.services import MAX_MESSAGE_LENGTH

# What a merchant user may write: to the customer, or to our support team. Never internal notes.
VISIBILITY_CHOICES = [
    (MessageVisibility.MERCHANT, _("Note to our support team (the customer does not see it)")),
    (MessageVisibility.PUBLIC, _("Reply to the customer (sent by email)")),
]


# --- the order filters: the API's FilterSet, dressed for people ----------------------------------


def order_filter(data, queryset: QuerySet[Order], request) -> OrderFilter:
    """`orders.filters.OrderFilter`, the API's own, over the merchant's orders. The merchant is
    fixed by the URL, so its filter is left out; the rest keep the API's names and values, so a
    portal link and an API query say the same thing."""
    filterset = OrderFilter(data or None, queryset=queryset, request=request)
    filterset.filters.pop("merchant", None)
    form = filterset.form
    labels = {
        "search": _("Reference or customer email"),
        "status": _("Status"),
        "unreturned": _("Unreturned"),
        "cause": _("Cause"),
        "category": _("Category"),
        "age": _("Unreturned for"),
        "provider": _("Payment provider"),
        "created_after": _("Submitted from"),
        "created_before": _("Submitted before"),
    }
    for name, label in labels.items():
        if name in form.fields:
            form.fields[name].label = label
            form.fields[name].help_text = ""
    form.fields["status"].widget = forms.CheckboxSelectMultiple(choices=form.fields["status"].choices)
    form.fields["unreturned"].widget.choices = [
        ("unknown", pgettext_lazy("unreturned filter", "Any")),
        ("true", _("Unreturned only")),
        ("false", _("Not unreturned")),
    ]
    _offer(form.fields["cause"], _("Any cause"), Cause.choices)
    _offer(form.fields["category"], _("Any category"), Category.choices)
    _offer(form.fields["age"], pgettext_lazy("age filter", "Any time"), AGE_CHOICES)
    for name in ("created_after", "created_before"):
        form.fields[name].widget = forms.DateInput(attrs={"type": "date"})
    form.fields["search"].widget.attrs.update(placeholder=_("e.g. JLT00001234 or li.wei@example.com"),
                                              type="search", autocomplete="off")
    form.fields["provider"].widget.attrs.update(placeholder=_("e.g. alipay"), autocomplete="off")
    return filterset


def _offer(field: forms.Field, empty_label, choices) -> None:
    # django-filter's choice fields put `empty_label` first when their choices are set.
    field.empty_label = empty_label
    field.choices = choices


# --- tickets --------------------------------------------------------------------------------------


class OpenTicketForm(forms.Form):
    order_reference = forms.CharField(
        label=_("Order reference"), max_length=64, required=False,
        help_text=_("Your order number, if the ticket is about one order."),
    )
    subject = forms.CharField(label=_("Subject"), max_length=200)
    category = forms.ChoiceField(label=_("Category"), choices=TICKET_CATEGORY_CHOICES, initial=OTHER_CATEGORY)
    priority = forms.ChoiceField(label=_("Priority"), choices=TicketPriority.choices, initial=TicketPriority.NORMAL)
    body = forms.CharField(label=_("Message"), max_length=MAX_MESSAGE_LENGTH, widget=forms.Textarea(attrs={"rows": 6}))
    visibility = forms.ChoiceField(
        label=_("Who reads this message"), choices=VISIBILITY_CHOICES, initial=MessageVisibility.MERCHANT,
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, orders: QuerySet[Order], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.orders = orders
        self.order: Order | None = None

    def clean_order_reference(self) -> str:
        reference = self.cleaned_data["order_reference"].strip()
        if reference:
            self.order = self.orders.filter(reference=reference).first()
            if self.order is None:
                raise forms.ValidationError(_("You have no order with this reference."), code="unknown_order")
        return reference

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise forms.ValidationError(_("Write a message."), code="required")
        return body


class ReplyForm(forms.Form):
    body = forms.CharField(label=_("Message"), max_length=MAX_MESSAGE_LENGTH, widget=forms.Textarea(attrs={"rows": 5}))
    visibility = forms.ChoiceField(
        label=_("Who reads this message"), choices=VISIBILITY_CHOICES, initial=MessageVisibility.MERCHANT,
        widget=forms.RadioSelect,
    )

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise forms.ValidationError(_("Write a message."), code="required")
        return body


class TicketStatusFilter(forms.Form):
    status = forms.ChoiceField(
        label=_("Show"), required=False,
        choices=[("open", pgettext_lazy("ticket list filter", "Open tickets")), ("all", _("All tickets"))],
    )


# --- members -------------------------------------------------------------------------------------


class AddMemberForm(forms.Form):
    identifier = forms.CharField(
        label=_("Username or email"), max_length=254,
        help_text=_("The person needs an account already; ask our support team to create one."),
    )
    role = forms.ChoiceField(label=_("Role"), choices=MembershipRole.choices, initial=MembershipRole.VIEWER)

    def clean_identifier(self):
        identifier = self.cleaned_data["identifier"].strip()
        users = get_user_model().objects.filter(is_active=True)
        user = users.filter(username=identifier).first()
        if user is None and "@" in identifier:
            matches = list(users.filter(email__iexact=identifier)[:2])
            if len(matches) > 1:
                raise forms.ValidationError(
                    _("Several accounts use this email address; give the username instead."), code="ambiguous")
            user = matches[0] if matches else None
        if user is None:
            raise forms.ValidationError(_("There is no active account with this username or email."),
                                        code="unknown_user")
        self.user = user
        return identifier


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=MembershipRole.choices)
