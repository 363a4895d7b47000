"""Guarded staff actions on orders, single and bulk, and the order page's panels.

Every action declares its permission, asks for a reason where it changes money or
status, and calls one service in `orders.services`; the services record actor, reason and
an event. Orders are looked up through `orders_visible_to`, like everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from orders.actors import Actor
from orders.evidence import diagnose_now, diagnosis_facts
from orders.exceptions import DomainError
from orders.models import Order, PaymentApproval
from orders.policy import PolicyBook, delays_for
from orders.recheck import check_order_now
from orders.selectors import orders_visible_to
from orders.services import (
    add_staff_note,
    assign_order,
    confirm_order,
    decide_mark_paid,
    request_mark_paid,
    staff_cancel_order,
    staff_mark_failed,
)
from orders.states import ATTEMPT_OPEN, OrderStatus
from orders.status_links import status_token
from orders.timeline import order_timeline
from support.models import OTHER_CATEGORY, TicketPriority, TicketSource
from support.services import TicketAlreadyOpen, open_ticket, ticket_subject

# Bulk "check now" is queued in tasks of this many orders, so the request never waits.
BULK_CHECK_CHUNK = 100


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason"), widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000,
        help_text=gettext_lazy("Kept on the order's timeline with your name."),
    )


class MarkPaidForm(ReasonForm):
    provider_reference = forms.CharField(
        label=gettext_lazy("Provider reference"), max_length=128,
        help_text=gettext_lazy("The payment's reference at the provider, as evidence that the customer paid."),
    )
    field_order = ["provider_reference", "reason"]


class NoteForm(forms.Form):
    text = forms.CharField(label=gettext_lazy("Note"), widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                           max_length=5000)


class OpenTicketForm(forms.Form):
    subject = forms.CharField(label=gettext_lazy("Subject"), max_length=200)
    priority = forms.ChoiceField(label=gettext_lazy("Priority"), choices=TicketPriority.choices,
                                 initial=TicketPriority.NORMAL)
    note = forms.CharField(label=gettext_lazy("Internal note"), required=False, max_length=5000,
                           widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                           help_text=gettext_lazy("Optional: what the next person should know. Not sent to the "
                                                  "customer."))


class DecisionForm(forms.Form):
    note = forms.CharField(label=gettext_lazy("Note"), required=False, max_length=2000,
                           widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
                           help_text=gettext_lazy("Required when you reject."))


@dataclass(frozen=True)
class ActionSpec:
    url_name: str  # admin:orders_order_<url_name>
    label: str
    permission: str  # codename on orders.Order (or on another app's model: see _PERMISSION_APPS)
    direct: bool  # a plain POST button; otherwise a page that asks for a reason first


SINGLE_ACTIONS = [
    ActionSpec("check_now", gettext_lazy("Check now"), "check_now", True),
    ActionSpec("mark_paid", gettext_lazy("Mark paid…"), "mark_paid", False),
    ActionSpec("mark_failed", gettext_lazy("Mark failed…"), "mark_failed", False),
    ActionSpec("cancel", gettext_lazy("Cancel order…"), "cancel_order", False),
    ActionSpec("retry_confirmation", gettext_lazy("Retry confirmation"), "retry_confirmation", True),
    ActionSpec("assign_to_me", gettext_lazy("Assign to me"), "assign_order", True),
    ActionSpec("open_ticket", gettext_lazy("Open ticket…"), "add_ticket", False),
]

# The few action permissions that belong to another app than orders.
_PERMISSION_APPS = {"add_ticket": "support"}


def _allowed(request, codename: str) -> bool:
    return request.user.has_perm(f"{_PERMISSION_APPS.get(codename, 'orders')}.{codename}")


def _require(request, codename: str) -> None:
    if not _allowed(request, codename):
        raise PermissionDenied


def diagnosis_panel(order: Order) -> dict:
    """The diagnosis of one order as staff see it, computed from its evidence now."""
    _evidence, verdict = diagnose_now(order.pk)
    attempts = list(order.attempts.order_by("-created_at", "-id"))
    open_attempt = next((a for a in attempts if a.status in ATTEMPT_OPEN), None)
    schedule = None
    if open_attempt is not None:
        policy = PolicyBook().for_attempt(open_attempt.provider, order.merchant_id)
        schedule = {
            "attempt": open_attempt,
            "next_check_at": open_attempt.next_check_at,
            "checks_done": open_attempt.check_count,
            "checks_planned": len(delays_for(policy, open_attempt.status)),
        }
    return {"diagnosis": diagnosis_facts(verdict, attempts), "schedule": schedule, "attempts": attempts}


class OrderActionsMixin:
    """Mixed into the staff OrderAdmin: action URLs, bulk actions and the order page panels."""

    change_form_template = "admin/orders/order/change_form.html"
    actions = ["bulk_check_now", "bulk_assign_to_me", "bulk_retry_confirmation", "bulk_mark_failed", "bulk_cancel",
               "bulk_open_tickets"]

    # --- URLs ----------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        extra = [
            path("<int:object_id>/check-now/", view(self.check_now_view), name="orders_order_check_now"),
            path("<int:object_id>/mark-paid/", view(self.mark_paid_view), name="orders_order_mark_paid"),
            path("<int:object_id>/mark-failed/", view(self.mark_failed_view), name="orders_order_mark_failed"),
            path("<int:object_id>/cancel/", view(self.cancel_view), name="orders_order_cancel"),
            path("<int:object_id>/retry-confirmation/", view(self.retry_confirmation_view),
                 name="orders_order_retry_confirmation"),
            path("<int:object_id>/assign-to-me/", view(self.assign_to_me_view), name="orders_order_assign_to_me"),
            path("<int:object_id>/note/", view(self.note_view), name="orders_order_note"),
            path("<int:object_id>/open-ticket/", view(self.open_ticket_view), name="orders_order_open_ticket"),
            path("approvals/<int:approval_id>/decide/", view(self.decide_approval_view),
                 name="orders_order_decide_approval"),
        ]
        return extra + super().get_urls()

    # --- the order page --------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        order = get_object_or_404(orders_visible_to(request.user).select_related("merchant", "assignee"),
                                  pk=object_id)
        context = {
            **diagnosis_panel(order),
            "timeline": order_timeline(order),
            "note_form": NoteForm(),
            "order_actions": [
                {"label": spec.label, "direct": spec.direct,
                 "url": reverse(f"admin:orders_order_{spec.url_name}", args=[order.pk])}
                for spec in SINGLE_ACTIONS if _allowed(request, spec.permission)
            ],
            "can_add_note": _allowed(request, "add_note"),
            "pending_approval": order.approvals.filter(status=PaymentApproval.Status.PENDING)
            .select_related("requested_by").first(),
            "can_approve": _allowed(request, "approve_mark_paid"),
            # What the customer sees: staff open it to answer "what does my page say?".
            "customer_status_path": reverse("track-order", args=[status_token(order)]),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _order(self, request, object_id) -> Order:
        return get_object_or_404(orders_visible_to(request.user).select_related("merchant"), pk=object_id)

    def _back(self, order: Order) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))

    def _actor(self, request) -> Actor:
        return Actor.staff(request.user)

    def _form_page(self, request, order: Order, *, title: str, form, action: str, intro: str = "",
                   confirm: bool = False, danger: bool = False):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "order": order,
            "form": form,
            "action_url": reverse(f"admin:orders_order_{action}", args=[order.pk]),
            "intro": intro,
            "confirm": confirm,
            "danger": danger,
            **diagnosis_panel(order),
        }
        return TemplateResponse(request, "admin/orders/order/action_form.html", context)

    def _run(self, request, order: Order, call, success: str) -> HttpResponseRedirect:
        try:
            call()
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, success, messages.SUCCESS)
        return self._back(order)

    # --- single-order actions ---------------------------------------------------------------

    def check_now_view(self, request, object_id):
        _require(request, "check_now")
        order = self._order(request, object_id)
        if request.method != "POST":
            return self._back(order)
        report = check_order_now(order.pk, actor=self._actor(request))
        if not report.items:
            self.message_user(request, _("No payment attempt of this order is waiting for an answer."), messages.INFO)
        for item in report.items:
            if item.error:
                self.message_user(request, _("%(provider)s %(reference)s: no answer (%(error)s).")
                                  % {"provider": item.provider, "reference": item.reference, "error": item.error},
                                  messages.WARNING)
            else:
                self.message_user(request, _("%(provider)s %(reference)s: the provider says %(status)s%(changed)s.")
                                  % {"provider": item.provider, "reference": item.reference,
                                     "status": item.reported_status,
                                     "changed": _(" (applied)") if item.changed else ""}, messages.SUCCESS)
        return self._back(order)

    def mark_paid_view(self, request, object_id):
        _require(request, "mark_paid")
        order = self._order(request, object_id)
        title = _("Mark order %(reference)s paid") % {"reference": order.reference}
        if request.method != "POST":
            return self._form_page(request, order, title=title, form=MarkPaidForm(), action="mark_paid",
                                   intro=_("Check the evidence below before you continue."))
        form = MarkPaidForm(request.POST)
        if not form.is_valid():
            return self._form_page(request, order, title=title, form=form, action="mark_paid")
        if request.POST.get("confirmed") != "yes":
            # Second step: the same data again, with the evidence, before anything changes.
            return self._form_page(request, order, title=title, form=form, action="mark_paid", confirm=True,
                                   intro=_("Please confirm: the order will be marked paid with this payment."))
        try:
            result = request_mark_paid(order=order.pk, provider_reference=form.cleaned_data["provider_reference"],
                                       reason=form.cleaned_data["reason"], actor=self._actor(request))
        except DomainError as exc:
            form.add_error(None, exc.message)
            return self._form_page(request, order, title=title, form=form, action="mark_paid")
        if result.approval is not None:
            self.message_user(request, _("Above the merchant's limit: a second staff member must approve it. "
                                         "The request is waiting."), messages.WARNING)
        else:
            self.message_user(request, _("Order marked paid; confirmation follows."), messages.SUCCESS)
        return self._back(order)

    def _reason_action(self, request, object_id, *, codename: str, action: str, title: str, service, success: str,
                       intro: str):
        _require(request, codename)
        order = self._order(request, object_id)
        title = title % {"reference": order.reference}
        form = ReasonForm(request.POST or None)
        if request.method != "POST" or not form.is_valid():
            return self._form_page(request, order, title=title, form=form, action=action, intro=intro, danger=True)
        try:
            service(order=order.pk, reason=form.cleaned_data["reason"], actor=self._actor(request))
        except DomainError as exc:
            form.add_error(None, exc.message)
            return self._form_page(request, order, title=title, form=form, action=action, intro=intro, danger=True)
        self.message_user(request, success, messages.SUCCESS)
        return self._back(order)

    def mark_failed_view(self, request, object_id):
        return self._reason_action(
            request, object_id, codename="mark_failed", action="mark_failed",
            title=_("Mark the payment of %(reference)s failed"), service=staff_mark_failed,
            success=_("Payment marked failed; the customer may try again."),
            intro=_("Open payment attempts will be marked failed. Do this only with evidence that no money moved."))

    def cancel_view(self, request, object_id):
        return self._reason_action(
            request, object_id, codename="cancel_order", action="cancel",
            title=_("Cancel order %(reference)s"), service=staff_cancel_order,
            success=_("Order cancelled."),
            intro=_("The order and its open payment attempts will be cancelled. This cannot be undone."))

    @staticmethod
    def _post_only(request):
        if request.method != "POST":
            raise PermissionDenied

    def retry_confirmation_view(self, request, object_id):
        _require(request, "retry_confirmation")
        self._post_only(request)
        order = self._order(request, object_id)
        return self._run(request, order, lambda: confirm_order(order=order.pk, actor=self._actor(request)),
                         _("Order confirmed."))

    def assign_to_me_view(self, request, object_id):
        _require(request, "assign_order")
        self._post_only(request)
        order = self._order(request, object_id)
        return self._run(request, order, lambda: assign_order(order=order.pk, assignee=request.user,
                                                              actor=self._actor(request)),
                         _("The order is assigned to you."))

    def note_view(self, request, object_id):
        _require(request, "add_note")
        self._post_only(request)
        order = self._order(request, object_id)
        form = NoteForm(request.POST)
        if not form.is_valid():
            self.message_user(request, _("A note cannot be empty."), messages.ERROR)
            return self._back(order)
        return self._run(request, order, lambda: add_staff_note(order=order.pk, text=form.cleaned_data["text"],
                                                                actor=self._actor(request)),
                         _("Note added."))

    @staticmethod
    def _ticket_link(ticket) -> str:
        try:
            url = reverse("admin:support_ticket_change", args=[ticket.pk])
        except NoReverseMatch:  # the ticket admin is not installed
            return f"#{ticket.pk}"
        return format_html('<a href="{}">#{}</a>', url, ticket.pk)

    def open_ticket_view(self, request, object_id):
        _require(request, "add_ticket")
        order = self._order(request, object_id)
        title = _("Open a ticket for order %(reference)s") % {"reference": order.reference}
        intro = _("The ticket is linked to this order and its customer; the note stays internal.")
        if request.method != "POST":
            initial = {"subject": ticket_subject(order),
                       "priority": TicketPriority.HIGH if order.needs_review else TicketPriority.NORMAL}
            return self._form_page(request, order, title=title, form=OpenTicketForm(initial=initial),
                                   action="open_ticket", intro=intro)
        form = OpenTicketForm(request.POST)
        if not form.is_valid():
            return self._form_page(request, order, title=title, form=form, action="open_ticket", intro=intro)
        try:
            ticket = open_ticket(
                subject=form.cleaned_data["subject"], source=TicketSource.STAFF, actor=self._actor(request),
                order=order.pk, category=order.stuck_cause or "other", priority=form.cleaned_data["priority"],
                body=form.cleaned_data["note"], visibility="internal",
            )
        except TicketAlreadyOpen as exc:
            self.message_user(request, format_html(
                _("This order already has an open ticket: {}."), self._ticket_link(exc.ticket)), messages.WARNING)
            return self._back(order)
        except DomainError as exc:
            form.add_error(None, exc.message)
            return self._form_page(request, order, title=title, form=form, action="open_ticket", intro=intro)
        self.message_user(request, format_html(_("Ticket {} opened."), self._ticket_link(ticket)), messages.SUCCESS)
        return self._back(order)

    def decide_approval_view(self, request, approval_id):
        _require(request, "approve_mark_paid")
        self._post_only(request)
        approval = get_object_or_404(PaymentApproval.objects.filter(order__in=orders_visible_to(request.user)),
                                     pk=approval_id)
        form = DecisionForm(request.POST)
        form.is_valid()
        approve = request.POST.get("decision") == "approve"
        return self._run(
            request, approval.order,
            lambda: decide_mark_paid(approval=approval.pk, approve=approve, actor=self._actor(request),
                                     note=form.cleaned_data.get("note", "")),
            _("Approved: the order is marked paid.") if approve else _("Rejected."),
        )

    # --- bulk actions on the worklist --------------------------------------------------------

    @admin.action(description=gettext_lazy("Check now (queued)"), permissions=["check_now"])
    def bulk_check_now(self, request, queryset):
        from django_q.tasks import async_task

        ids = list(queryset.filter(attempts__status__in=sorted(ATTEMPT_OPEN)).values_list("pk", flat=True).distinct())
        for start in range(0, len(ids), BULK_CHECK_CHUNK):
            async_task("orders.tasks.check_orders_now", ids[start:start + BULK_CHECK_CHUNK], request.user.pk,
                       task_name=f"check-now-{request.user.pk}-{timezone.now():%H%M%S}-{start}")
        self.message_user(request, _("%(count)d orders with an open payment are queued for a check.")
                          % {"count": len(ids)}, messages.SUCCESS)

    @admin.action(description=gettext_lazy("Assign to me"), permissions=["assign_order"])
    def bulk_assign_to_me(self, request, queryset):
        actor = self._actor(request)
        for order_id in queryset.values_list("pk", flat=True):
            assign_order(order=order_id, assignee=request.user, actor=actor)
        self.message_user(request, _("Assigned to you."), messages.SUCCESS)

    @admin.action(description=gettext_lazy("Retry confirmation"), permissions=["retry_confirmation"])
    def bulk_retry_confirmation(self, request, queryset):
        done = failed = 0
        for order_id in queryset.filter(status=OrderStatus.PAID).values_list("pk", flat=True):
            try:
                confirm_order(order=order_id, actor=self._actor(request))
                done += 1
            except DomainError:
                failed += 1
        self.message_user(request, _("%(done)d confirmed, %(failed)d still failing (see their timelines).")
                          % {"done": done, "failed": failed}, messages.WARNING if failed else messages.SUCCESS)

    def _bulk_with_reason(self, request, queryset, *, service, title: str, action: str):
        if "reason" in request.POST and request.POST.get("apply") == "yes":
            form = ReasonForm(request.POST)
            if form.is_valid():
                done, errors = 0, []
                for order in queryset:
                    try:
                        service(order=order.pk, reason=form.cleaned_data["reason"], actor=self._actor(request))
                        done += 1
                    except DomainError as exc:
                        errors.append(exc.message)
                self.message_user(request, _("%(done)d of %(total)d orders changed.")
                                  % {"done": done, "total": done + len(errors)},
                                  messages.WARNING if errors else messages.SUCCESS)
                for message in errors[:10]:
                    self.message_user(request, message, messages.ERROR)
                return None
        else:
            form = ReasonForm()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "form": form,
            "orders": queryset[:200],
            "count": queryset.count(),
            "action": action,
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            # "All N orders" across pages: without it the second step would change only the
            # rows ticked on the page, not the orders listed and counted above.
            "select_across": "1" if request.POST.get("select_across") == "1" else "0",
        }
        return TemplateResponse(request, "admin/orders/order/bulk_reason.html", context)

    @admin.action(description=gettext_lazy("Mark payment failed…"), permissions=["mark_failed"])
    def bulk_mark_failed(self, request, queryset):
        return self._bulk_with_reason(request, queryset, service=staff_mark_failed,
                                      title=_("Mark the payments of these orders failed"), action="bulk_mark_failed")

    @admin.action(description=gettext_lazy("Cancel orders…"), permissions=["cancel_order"])
    def bulk_cancel(self, request, queryset):
        return self._bulk_with_reason(request, queryset, service=staff_cancel_order,
                                      title=_("Cancel these orders"), action="bulk_cancel")

    @admin.action(description=gettext_lazy("Open tickets"), permissions=["open_ticket"])
    def bulk_open_tickets(self, request, queryset):
        actor = self._actor(request)
        opened = existing = 0
        errors = []
        for order in queryset.select_related(None).only("pk", "reference", "stuck_cause"):
            try:
                open_ticket(subject=ticket_subject(order), source=TicketSource.STAFF, actor=actor,
                            order=order.pk, category=order.stuck_cause or OTHER_CATEGORY)
                opened += 1
            except TicketAlreadyOpen:
                existing += 1
            except DomainError as exc:
                errors.append(f"{order.reference}: {exc.message}")
        summary = ngettext("%(opened)d ticket opened", "%(opened)d tickets opened", opened) % {"opened": opened}
        if existing:
            summary += "; " + ngettext("%(existing)d order already had one.", "%(existing)d orders already had one.",
                                       existing) % {"existing": existing}
        self.message_user(request, summary,
                          messages.WARNING if errors else messages.SUCCESS)
        for message in errors[:10]:
            self.message_user(request, message, messages.ERROR)

    # ModelAdmin asks has_<permission>_permission for each action.
    def has_check_now_permission(self, request) -> bool:
        return _allowed(request, "check_now")

    def has_assign_order_permission(self, request) -> bool:
        return _allowed(request, "assign_order")

    def has_retry_confirmation_permission(self, request) -> bool:
        return _allowed(request, "retry_confirmation")

    def has_mark_failed_permission(self, request) -> bool:
        return _allowed(request, "mark_failed")

    def has_cancel_order_permission(self, request) -> bool:
        return _allowed(request, "cancel_order")

    def has_open_ticket_permission(self, request) -> bool:
        return _allowed(request, "add_ticket")

