"""The customer status page: `/track/<token>/` and its "report a problem" form.

Reached only through a signed link (`orders.status_links`), without a login. It shows what a
customer may see of their own order (reference, shop, amount, status in plain words, what
happens next, what to do) and nothing internal: no notes, no diagnosis evidence, no staff, no
other orders. A wrong, edited or expired link gets the same 404 page as an unknown one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from orders import ratelimit
from orders.causes import Cause
from orders.exceptions import DomainError
from orders.models import Order
from orders.states import OrderStatus
from orders.status_links import order_for_token
from support.services import MAX_REPORT_LENGTH, report_problem

# --- what the customer reads ----------------------------------------------------------------
# Plain words for people who are not staff: no provider jargon, no cause codes. `%(shop)s`
# is the merchant's name.


@dataclass(frozen=True)
class StatusText:
    headline: str
    next: str
    todo: str


STATUS_TEXT: dict[str, StatusText] = {
    OrderStatus.SUBMITTED: StatusText(
        _("We have received your order"),
        _("We are waiting for your payment to start."),
        _("If you have not paid yet, go back to %(shop)s to complete the payment."),
    ),
    OrderStatus.PAYMENT_PENDING: StatusText(
        _("Your payment is being processed"),
        _("We are waiting for the payment provider to confirm your payment. This usually takes a few minutes."),
        _("Nothing for now. If your bank asks you to confirm the payment, please do so."),
    ),
    OrderStatus.PAID: StatusText(
        _("Your payment has been received"),
        _("%(shop)s is confirming your order."),
        _("Nothing: you do not need to do anything."),
    ),
    OrderStatus.CONFIRMED: StatusText(
        _("Your order is confirmed"),
        _("Your payment went through and %(shop)s has confirmed your order."),
        _("Nothing: you do not need to do anything."),
    ),
    OrderStatus.PAYMENT_FAILED: StatusText(
        _("Your payment did not go through"),
        _("The payment was not completed, so the order is on hold."),
        _("You can try again at %(shop)s with another card or payment method."),
    ),
    OrderStatus.CANCELLED: StatusText(
        _("Your order has been cancelled"),
        _("Nothing more will happen with this order."),
        _("If you still want to buy, please place a new order at %(shop)s. "
          "If your bank shows a charge for this order, tell us with the form below."),
    ),
    OrderStatus.EXPIRED: StatusText(
        _("Your order has expired"),
        _("The order was not paid in time, so it has been closed."),
        _("If you still want to buy, please place a new order at %(shop)s."),
    ),
    OrderStatus.REFUNDED: StatusText(
        _("Your payment has been refunded"),
        _("The money is on its way back to you. It can take a few working days to appear on your statement."),
        _("Nothing: you do not need to do anything."),
    ),
}


@dataclass(frozen=True)
class CauseText:
    """For an order that is held up: what is happening, and what the customer can do."""

    happening: str
    todo: str


_CHECKING = _("There is no need to pay again. If your payment went through, your order will go ahead "
              "on its own and we will let you know.")

CAUSE_TEXT: dict[str, CauseText] = {
    Cause.NO_PAYMENT_STARTED: CauseText(
        _("We have not received a payment for this order yet."),
        _("If you still want this order, go back to %(shop)s and complete the payment. If you do not, "
          "you need not do anything: the order will close on its own after a while."),
    ),
    Cause.AWAITING_CUSTOMER_ACTION: CauseText(
        _("Your bank is waiting for you to confirm the payment."),
        _("Please finish the security check (3-D Secure) or approve the payment in your bank's app. "
          "As soon as your bank confirms it, your order goes ahead."),
    ),
    Cause.PAYMENT_DECLINED: CauseText(
        _("Your bank or card provider declined the payment."),
        _("Please try again at %(shop)s with another card or payment method, or ask your bank why the "
          "payment was declined."),
    ),
    Cause.INVALID_CUSTOMER_DATA: CauseText(
        _("We could not confirm your order because some of your details look incomplete or wrong."),
        _("Please check your delivery address and phone number, and send us the correct details with "
          "the form below."),
    ),
    Cause.RESULT_UNKNOWN: CauseText(
        _("We are checking with the payment provider whether your payment went through."),
        _CHECKING,
    ),
    Cause.PROVIDER_UNREACHABLE: CauseText(
        _("We cannot reach the payment provider at the moment, so we are checking your payment again "
          "at regular intervals."),
        _CHECKING,
    ),
    Cause.PROVIDER_OUTAGE: CauseText(
        _("The payment provider is having a temporary problem. We are checking your payment as soon "
          "as it is back."),
        _CHECKING,
    ),
    Cause.CALLBACK_LOST: CauseText(
        _("We are checking with the payment provider and updating your order with the result."),
        _CHECKING,
    ),
    Cause.AMOUNT_MISMATCH: CauseText(
        _("The payment we received does not match the order, so our team is checking it by hand."),
        _("There is no need to pay again. We will email you if we need anything from you."),
    ),
    Cause.DUPLICATE_PAYMENT: CauseText(
        _("It looks like this order was paid twice. Our team is checking the payments."),
        _("You do not need to do anything: a payment made twice is refunded."),
    ),
    Cause.PROCESSING_ERROR: CauseText(
        _("Your payment has arrived, but we have not been able to finish confirming your order yet. "
          "We are trying again."),
        _("There is no need to pay again. Your order will go ahead as soon as the confirmation works."),
    ),
    Cause.NO_ACCESS: CauseText(
        _("Our team is looking into this order."),
        _("You do not need to do anything. If you have a question, use the form below."),
    ),
}


@dataclass(frozen=True)
class When:
    """A moment shown to a customer: "5 minutes ago", with the exact time beside it."""

    at: datetime
    ago: str


def when(at: datetime) -> When:
    if timezone.now() - at < timedelta(minutes=1):
        return When(at, gettext("just now"))
    return When(at, gettext("%(time)s ago") % {"time": timesince(at, depth=1)})


@dataclass(frozen=True)
class CustomerView:
    """Everything the template may show, and nothing more: the template never sees the Order."""

    reference: str
    shop: str
    amount: object
    currency: str
    status: str
    status_label: str
    headline: str
    happening: str
    todo: str
    held_up: bool
    status_since: When
    updated_at: When
    steps: list[tuple[str, str]]


def _steps(status: str) -> list[tuple[str, str]]:
    """A three-step progress line (label, state) for the normal path of an order."""
    labels = [_("Order placed"), _("Payment"), _("Confirmed")]
    reached = {
        OrderStatus.SUBMITTED: 1, OrderStatus.PAYMENT_PENDING: 1, OrderStatus.PAYMENT_FAILED: 1,
        OrderStatus.PAID: 2, OrderStatus.CONFIRMED: 3, OrderStatus.REFUNDED: 3,
    }.get(status)
    if reached is None:  # cancelled or expired: no progress line
        return []
    return [(label, "done" if i < reached else ("current" if i == reached else "todo"))
            for i, label in enumerate(labels)]


def customer_view(order: Order) -> CustomerView:
    shop = {"shop": order.merchant.name}
    text = STATUS_TEXT[order.status]
    cause = CAUSE_TEXT.get(order.stuck_cause) if order.stuck_cause else None
    return CustomerView(
        reference=order.reference,
        shop=order.merchant.name,
        amount=order.amount,
        currency=order.currency,
        status=order.status,
        status_label=order.get_status_display(),
        headline=text.headline,
        happening=(cause.happening if cause else text.next) % shop,
        todo=(cause.todo if cause else text.todo) % shop,
        held_up=cause is not None,
        status_since=when(order.status_changed_at),
        updated_at=when(max(order.updated_at, order.status_changed_at)),
        steps=_steps(order.status),
    )


# --- report a problem -----------------------------------------------------------------------

# The form says so before the service would refuse it.
MESSAGE_MAX_LENGTH = MAX_REPORT_LENGTH
REPORTS_PER_ORDER_PER_HOUR = 5
REPORTS_PER_IP_PER_HOUR = 20
RATE_WINDOW_SECONDS = 3600


class ReportProblemForm(forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=200)
    email = forms.EmailField(
        label=_("Your email address"), max_length=254,
        help_text=_("The address you used for this order. We reply to it."),
    )
    message = forms.CharField(
        label=_("What went wrong?"), max_length=MESSAGE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 5}),
    )

    def __init__(self, *args, order: Order, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order = order
        self.fields["name"].widget.attrs.update(autocomplete="name")
        self.fields["email"].widget.attrs.update(autocomplete="email", inputmode="email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip()
        # A check that the sender knows the order, not a lookup: never say which address is expected.
        if email.casefold() != self.order.customer_email.strip().casefold():
            raise forms.ValidationError(
                _("This is not the email address we have for this order. Please use the address you "
                  "gave when you placed the order."),
                code="email_mismatch",
            )
        return email

    def clean_message(self) -> str:
        message = self.cleaned_data["message"].strip()
        if not message:
            raise forms.ValidationError(_("Please tell us what went wrong."), code="required")
        return message


def _rate_limited(order: Order, request: HttpRequest) -> bool:
    """Count this submission; True when it is over a limit (and then it is not counted)."""
    ip = hashlib.sha256(ratelimit.client_ip(request).encode()).hexdigest()[:32]
    limits = [
        (f"track-report:order:{order.pk}", REPORTS_PER_ORDER_PER_HOUR),
        (f"track-report:ip:{ip}", REPORTS_PER_IP_PER_HOUR),
    ]
    return ratelimit.take(limits, window_seconds=RATE_WINDOW_SECONDS) is not None


# --- views ----------------------------------------------------------------------------------


def _private(response: HttpResponse) -> HttpResponse:
    # The link is the key to the page: never send it to other sites, never index the page.
    # Not "no-referrer": under it browsers send `Origin: null` with the page's own POSTs (the
    # report form, the language switch), and Django's CSRF origin check rightly refuses them.
    # "same-origin" sends the address to this site only, which already knows the token.
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _not_found(request: HttpRequest) -> HttpResponse:
    return _private(render(request, "track/not_found.html", status=404))


def _page(request: HttpRequest, order: Order, token: str, form: ReportProblemForm, *, status: int = 200,
          rate_limited: bool = False) -> HttpResponse:
    context = {
        "view": customer_view(order),
        "token": token,
        "form": form,
        "rate_limited": rate_limited,
        "open_form": rate_limited or form.is_bound,
    }
    return _private(render(request, "track/order.html", context, status=status))


@never_cache
@require_GET
def track_order(request: HttpRequest, token: str) -> HttpResponse:
    order = order_for_token(token)
    if order is None:
        return _not_found(request)
    return _page(request, order, token, ReportProblemForm(order=order))


@never_cache
@require_POST
def track_report(request: HttpRequest, token: str) -> HttpResponse:
    order = order_for_token(token)
    if order is None:
        return _not_found(request)
    form = ReportProblemForm(request.POST, order=order)
    if _rate_limited(order, request):
        # Keep what they typed, so nothing is lost when they come back later.
        form = ReportProblemForm(order=order, initial=request.POST.dict())
        return _page(request, order, token, form, status=429, rate_limited=True)
    if not form.is_valid():
        return _page(request, order, token, form, status=400)
    try:
        report_problem(
            order=order,
            name=form.cleaned_data["name"],
            email=form.cleaned_data["email"],
            message=form.cleaned_data["message"],
        )
    except DomainError as exc:
        form.add_error(None, exc.message)
        return _page(request, order, token, form, status=400)
    messages.success(request, _("Thank you. We have your message and will reply by email."))
    return _private(redirect("track-order", token))
