"""Support tickets in the staff admin: the ticket queues, the ticket page and its forms,
saved replies and SLA targets.

The admin only reads tickets; every change (opening, replying, status, priority, assignee)
calls one function of `support.services`, which records actor and event. The ticket page
shows the order's diagnosis and timeline with the same context builders as the order page
(`backoffice.order_actions.diagnosis_panel`, `orders.timeline.order_timeline`).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backoffice.order_actions import diagnosis_panel
from backoffice.worklist import MerchantFilter
from orders.actors import Actor
from orders.exceptions import DomainError
from orders.models import Merchant
from orders.selectors import orders_visible_to
from orders.timeline import order_timeline
from support.models import (
    TICKET_CATEGORY_CHOICES,
    MessageVisibility,
    SavedReply,
    SlaTarget,
    Ticket,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from support.selectors import DUE_SOON, ticket_queue, tickets_visible_to
from support.selectors import QUEUES as QUEUE_SELECTORS
from support.services import MAX_MESSAGE_LENGTH

# The ticket page shows this many of the order's latest timeline entries; the order page has all.
TIMELINE_LIMIT = 50


def next_due(ticket: Ticket):
    """(kind, due time) of the ticket's next SLA deadline, or (None, None) when none applies."""
    if not ticket.is_open:
        return None, None
    candidates = []
    if ticket.first_responded_at is None and ticket.first_response_due_at is not None:
        candidates.append((ticket.first_response_due_at, "first_response"))
    if ticket.resolution_due_at is not None:
        candidates.append((ticket.resolution_due_at, "resolution"))
    if not candidates:
        return None, None
    at, kind = min(candidates)
    return kind, at


def due_state(ticket: Ticket, now) -> str:
    """overdue, soon, paused, ok or "" (no deadline): how the due time is coloured."""
    kind, at = next_due(ticket)
    if at is None:
        return ""
    if ticket.sla_paused_at is not None:
        return "paused"
    if at < now:
        return "overdue"
    if at <= now + DUE_SOON:
        return "soon"
    return "ok"


def _local(value) -> str:
    return formats.date_format(timezone.localtime(value), "Y-m-d H:i") if value else ""


# --- queues and filters ----------------------------------------------------------------------


QUEUES = [
    ("mine", gettext_lazy("Mine")),
    ("unassigned", gettext_lazy("Unassigned")),
    ("due_soon", gettext_lazy("SLA due soon")),
    ("escalated", gettext_lazy("Escalated")),
]


class QueueFilter(admin.SimpleListFilter):
    """The ready-made queues; the parameter name is part of the interface (bookmarks)."""

    title = gettext_lazy("queue")
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return QUEUES

    def queryset(self, request, queryset):
        # The queues are support's selectors (open tickets only for mine and unassigned); the
        # bookmarked parameter value "due_soon" names the selectors' "sla_due_soon".
        name = {"due_soon": "sla_due_soon"}.get(self.value(), self.value())
        if name not in QUEUE_SELECTORS:
            return queryset
        return queryset & ticket_queue(request.user, name).order_by()


class TicketChangeList(ChangeList):
    def ticket_queues(self) -> list[dict]:
        current = {k: v for k, v in self.params.items() if k not in ("o", "q", "p")}
        queues = [{"label": _("All tickets"), "params": {}}] + [
            {"label": label, "params": {QueueFilter.parameter_name: key}}
            for key, label in QUEUES
        ]
        return [
            {"label": q["label"], "url": "?" + urlencode(q["params"]), "active": current == q["params"]}
            for q in queues
        ]


# --- forms of the ticket page ----------------------------------------------------------------


class ReplyForm(forms.Form):
    body = forms.CharField(label=gettext_lazy("Message"), max_length=MAX_MESSAGE_LENGTH,
                           widget=forms.Textarea(attrs={"rows": 6, "cols": 60}))
    visibility = forms.ChoiceField(
        label=gettext_lazy("Send as"), initial=MessageVisibility.INTERNAL, widget=forms.RadioSelect,
        choices=[(MessageVisibility.PUBLIC.value, gettext_lazy("Public reply (emails the customer)")),
                 (MessageVisibility.MERCHANT.value, gettext_lazy("Note to the merchant (not shown to the customer)")),
                 (MessageVisibility.INTERNAL.value, gettext_lazy("Internal note"))],
    )


class StatusForm(forms.Form):
    status = forms.ChoiceField(label=gettext_lazy("Status"), choices=TicketStatus.choices)
    reason = forms.CharField(label=gettext_lazy("Reason"), required=False, max_length=2000,
                             widget=forms.TextInput(attrs={"size": 30}))


class PriorityForm(forms.Form):
    priority = forms.ChoiceField(label=gettext_lazy("Priority"), choices=TicketPriority.choices)
    reason = forms.CharField(label=gettext_lazy("Reason"), required=False, max_length=2000,
                             widget=forms.TextInput(attrs={"size": 30}))


def assignable_users() -> QuerySet:
    return get_user_model().objects.filter(is_staff=True, is_active=True).order_by("username")


class AssigneeForm(forms.Form):
    assignee = forms.ModelChoiceField(label=gettext_lazy("Assignee"), queryset=assignable_users(), required=False,
                                      empty_label=gettext_lazy("(nobody)"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = assignable_users()
        self.fields["assignee"].label_from_instance = lambda user: user.get_username()


class OpenTicketForm(forms.Form):
    merchant = forms.ModelChoiceField(label=gettext_lazy("Merchant"), queryset=Merchant.objects.order_by("code"))
    order_reference = forms.CharField(label=gettext_lazy("Order reference"), required=False, max_length=64,
                                      help_text=gettext_lazy("The merchant's own order number, if the ticket is "
                                                             "about an order."))
    subject = forms.CharField(label=gettext_lazy("Subject"), max_length=200)
    category = forms.ChoiceField(label=gettext_lazy("Category"), choices=TICKET_CATEGORY_CHOICES, initial="other")
    priority = forms.ChoiceField(label=gettext_lazy("Priority"), choices=TicketPriority.choices,
                                 initial=TicketPriority.NORMAL)
    customer_name = forms.CharField(label=gettext_lazy("Customer name"), required=False, max_length=200)
    customer_email = forms.EmailField(label=gettext_lazy("Customer email"), required=False)
    body = forms.CharField(label=gettext_lazy("First message"), required=False, max_length=MAX_MESSAGE_LENGTH,
                           widget=forms.Textarea(attrs={"rows": 4, "cols": 60}))
    visibility = ReplyForm.base_fields["visibility"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.order = None

    def clean(self):
        data = super().clean()
        reference = (data.get("order_reference") or "").strip()
        merchant = data.get("merchant")
        if reference and merchant is not None:
            self.order = orders_visible_to(self.user).filter(merchant=merchant, reference=reference).first()
            if self.order is None:
                self.add_error("order_reference", _("This merchant has no order with this reference."))
        return data


# --- the ticket admin ------------------------------------------------------------------------


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    change_form_template = "admin/support/ticket/change_form.html"
    change_list_template = "admin/support/ticket/change_list.html"
    list_display = ["id", "subject", "order_link", "merchant_code", "status_badge", "priority_badge",
                    "assignee_name", "due", "created"]
    list_display_links = ["id", "subject"]
    list_filter = [QueueFilter, "status", "priority", "category", "source", MerchantFilter]
    list_select_related = ["order", "merchant", "assignee"]
    sortable_by = ["id", "created"]
    search_fields = ["id", "order__reference", "customer_email"]  # searched exactly, see get_search_results
    search_help_text = gettext_lazy("Exact ticket number (#123), order reference or customer email.")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    fields = ["subject", "merchant", "order", "category", "status", "priority", "assignee", "source",
              "customer_name", "customer_email", "created_at", "first_response_due_at", "resolution_due_at",
              "sla_paused_at", "first_responded_at", "escalated_at", "resolved_at", "reopened_count"]
    readonly_fields = fields

    # --- lists ---------------------------------------------------------------------------------

    def get_queryset(self, request):
        queryset = tickets_visible_to(request.user)
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_changelist(self, request, **kwargs):
        return TicketChangeList

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        number = term.lstrip("#")
        match = Q(order__reference=term) | Q(customer_email__iexact=term) if "@" in term else Q(order__reference=term)
        if number.isdigit():
            match |= Q(pk=int(number))
        return queryset.filter(match), False

    @admin.display(description=gettext_lazy("order"))
    def order_link(self, obj: Ticket):
        if obj.order_id is None:
            return ""
        return format_html('<a href="{}">{}</a>', reverse("admin:orders_order_change", args=[obj.order_id]),
                           obj.order.reference)

    @admin.display(description=gettext_lazy("merchant"))
    def merchant_code(self, obj: Ticket) -> str:
        return obj.merchant.code

    @admin.display(description=gettext_lazy("status"))
    def status_badge(self, obj: Ticket):
        return format_html('<span class="ticket-status status-{}">{}</span>', obj.status, obj.get_status_display())

    @admin.display(description=gettext_lazy("priority"))
    def priority_badge(self, obj: Ticket):
        return format_html('<span class="ticket-priority priority-{}">{}</span>', obj.priority,
                           obj.get_priority_display())

    @admin.display(description=gettext_lazy("assignee"))
    def assignee_name(self, obj: Ticket) -> str:
        return obj.assignee.get_username() if obj.assignee_id else ""

    @admin.display(description=gettext_lazy("due"))
    def due(self, obj: Ticket):
        kind, at = next_due(obj)
        if at is None:
            return ""
        state = due_state(obj, timezone.now())
        label = _("first response due") if kind == "first_response" else _("resolution due")
        if state == "paused":
            label = _("%(due)s (SLA clock paused)") % {"due": label}
        elif state == "overdue":
            label = _("%(due)s: overdue") % {"due": label}
        return format_html('<span class="ticket-due due-{}" title="{}">{}</span>', state, label, _local(at))

    @admin.display(description=gettext_lazy("created"), ordering="created_at")
    def created(self, obj: Ticket) -> str:
        return _local(obj.created_at)

    # --- permissions ---------------------------------------------------------------------------

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    # --- URLs ----------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        extra = [
            path("<int:object_id>/reply/", view(self.reply_view), name="support_ticket_reply"),
            path("<int:object_id>/status/", view(self.status_view), name="support_ticket_status"),
            path("<int:object_id>/priority/", view(self.priority_view), name="support_ticket_priority"),
            path("<int:object_id>/assign/", view(self.assign_view), name="support_ticket_assign"),
        ]
        return extra + super().get_urls()

    # --- opening a ticket ----------------------------------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        initial = {}
        order_id = request.GET.get("order")
        if order_id and order_id.isdigit():
            order = orders_visible_to(request.user).select_related("merchant").filter(pk=int(order_id)).first()
            if order is not None:
                initial = {"merchant": order.merchant_id, "order_reference": order.reference,
                           "customer_name": order.customer_name, "customer_email": order.customer_email,
                           "category": order.stuck_cause or "other"}
        form = OpenTicketForm(request.POST or None, user=request.user, initial=initial)
        if request.method == "POST" and form.is_valid():
            from support.services import open_ticket

            data = form.cleaned_data
            try:
                ticket = open_ticket(
                    subject=data["subject"], source=TicketSource.STAFF, actor=Actor.staff(request.user),
                    merchant=data["merchant"], order=form.order, category=data["category"],
                    priority=data["priority"], body=data["body"], visibility=data["visibility"],
                    customer_name=data["customer_name"], customer_email=data["customer_email"],
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, _("Ticket #%(id)s opened.") % {"id": ticket.pk}, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:support_ticket_change", args=[ticket.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Open a ticket"),
            "form": form,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/support/ticket/add_form.html", context)

    # --- the ticket page -----------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "POST":
            # Nothing is edited through the form: every change has its own endpoint and service.
            return HttpResponseNotAllowed(["GET"])
        ticket = get_object_or_404(
            tickets_visible_to(request.user).select_related("merchant", "order", "order__merchant", "assignee"),
            pk=object_id,
        )
        context = {**ticket_page_context(request, ticket), "title": str(ticket), "subtitle": None,
                   **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- POST endpoints: permission, service, message, back to the ticket page -------------------

    def _ticket(self, request, object_id) -> Ticket:
        return get_object_or_404(tickets_visible_to(request.user), pk=object_id)

    @staticmethod
    def _require(request, codename: str) -> None:
        if not request.user.has_perm(f"support.{codename}"):
            raise PermissionDenied

    @staticmethod
    def _back(ticket: Ticket, anchor: str = "") -> HttpResponseRedirect:
        url = reverse("admin:support_ticket_change", args=[ticket.pk])
        return HttpResponseRedirect(f"{url}#{anchor}" if anchor else url)

    def _run(self, request, ticket: Ticket, call, success: str, anchor: str = "") -> HttpResponseRedirect:
        try:
            call()
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, success, messages.SUCCESS)
        return self._back(ticket, anchor)

    def _invalid(self, request, ticket: Ticket, form) -> HttpResponseRedirect:
        for errors in form.errors.values():
            for error in errors:
                self.message_user(request, error, messages.ERROR)
        return self._back(ticket)

    def reply_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._require(request, "reply_ticket")
        ticket = self._ticket(request, object_id)
        form = ReplyForm(request.POST)
        if not form.is_valid():
            return self._invalid(request, ticket, form)
        from support.services import add_message

        done = {
            MessageVisibility.PUBLIC: _("Reply sent; the customer will be emailed."),
            MessageVisibility.MERCHANT: _("Note to the merchant added."),
        }.get(form.cleaned_data["visibility"], _("Internal note added."))
        return self._run(
            request, ticket,
            lambda: add_message(ticket=ticket, body=form.cleaned_data["body"],
                                visibility=form.cleaned_data["visibility"], actor=Actor.staff(request.user)),
            done,
            anchor="conversation",
        )

    def status_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._require(request, "change_ticket")
        ticket = self._ticket(request, object_id)
        form = StatusForm(request.POST)
        if not form.is_valid():
            return self._invalid(request, ticket, form)
        from support.services import change_status

        to = form.cleaned_data["status"]
        return self._run(
            request, ticket,
            lambda: change_status(ticket=ticket, to=to, actor=Actor.staff(request.user),
                                  reason=form.cleaned_data["reason"]),
            _("Status changed to %(status)s.") % {"status": TicketStatus(to).label},
        )

    def priority_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._require(request, "change_ticket")
        ticket = self._ticket(request, object_id)
        form = PriorityForm(request.POST)
        if not form.is_valid():
            return self._invalid(request, ticket, form)
        from support.services import change_priority

        to = form.cleaned_data["priority"]
        return self._run(
            request, ticket,
            lambda: change_priority(ticket=ticket, to=to, actor=Actor.staff(request.user),
                                    reason=form.cleaned_data["reason"]),
            _("Priority changed to %(priority)s.") % {"priority": TicketPriority(to).label},
        )

    def assign_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._require(request, "change_ticket")
        ticket = self._ticket(request, object_id)
        if request.POST.get("to_me") == "1":
            assignee = request.user
        else:
            form = AssigneeForm(request.POST)
            if not form.is_valid():
                return self._invalid(request, ticket, form)
            assignee = form.cleaned_data["assignee"]
        from support.services import assign_ticket

        if assignee is None:
            success = _("The ticket is unassigned.")
        elif assignee.pk == request.user.pk:
            success = _("The ticket is assigned to you.")
        else:
            success = _("The ticket is assigned to %(user)s.") % {"user": assignee.get_username()}
        return self._run(
            request, ticket,
            lambda: assign_ticket(ticket=ticket, assignee=assignee, actor=Actor.staff(request.user)),
            success,
        )


def ticket_history(ticket: Ticket) -> list[dict]:
    history = []
    for event in ticket.events.select_related("actor_user").order_by("-created_at", "-id"):
        history.append({
            "at": event.created_at,
            "kind": event.kind,
            "title": event.get_kind_display(),
            "from": event.value_label(event.from_value),
            "to": event.value_label(event.to_value),
            "actor": event.actor_user.get_username() if event.actor_user_id else event.actor_kind,
            "message": event.message,
        })
    return history


def saved_replies_for(ticket: Ticket) -> list[SavedReply]:
    return list(SavedReply.objects.filter(Q(category=ticket.category) | Q(category=""), active=True)
                .order_by("title"))


def ticket_page_context(request, ticket: Ticket) -> dict:
    user = request.user
    saved_replies = saved_replies_for(ticket)
    reply_initial = {}
    # Without the script, "Insert" reloads the page with the chosen saved reply in the textarea.
    chosen = request.GET.get("saved_reply", "")
    if chosen.isdigit():
        reply_initial["body"] = next((r.body for r in saved_replies if r.pk == int(chosen)), "")
    now = timezone.now()
    kind, due_at = next_due(ticket)
    context = {
        "ticket": ticket,
        "conversation": list(ticket.messages.select_related("author_user").order_by("created_at", "id")),
        "history": ticket_history(ticket),
        "reply_form": ReplyForm(initial=reply_initial),
        "status_form": StatusForm(initial={"status": ticket.status}),
        "priority_form": PriorityForm(initial={"priority": ticket.priority}),
        "assignee_form": AssigneeForm(initial={"assignee": ticket.assignee_id}),
        "saved_replies": saved_replies,
        "can_reply": user.has_perm("support.reply_ticket"),
        "can_change": user.has_perm("support.change_ticket"),
        "due_kind": kind,
        "due_at": due_at,
        "due_state": due_state(ticket, now),
        "order": ticket.order,
        "timeline": [],
        "timeline_more": False,
    }
    if ticket.order_id is not None:
        entries = order_timeline(ticket.order)
        context.update({**diagnosis_panel(ticket.order), "timeline": entries[:TIMELINE_LIMIT],
                        "timeline_more": len(entries) > TIMELINE_LIMIT})
    return context


# --- saved replies and SLA targets -----------------------------------------------------------


@admin.register(SavedReply)
class SavedReplyAdmin(admin.ModelAdmin):
    list_display = ["title", "category", "active"]
    list_filter = ["active", "category"]
    list_editable = ["active"]
    search_fields = ["title"]
    fields = ["title", "category", "body", "active"]
    show_facets = admin.ShowFacets.NEVER

    # Saved replies are managed with the ticket permission "manage saved replies"; anyone who
    # may reply may read them.
    def has_view_permission(self, request, obj=None) -> bool:
        return (super().has_view_permission(request, obj) or request.user.has_perm("support.reply_ticket")
                or request.user.has_perm("support.manage_saved_replies"))

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) or request.user.has_perm("support.manage_saved_replies")

    def has_change_permission(self, request, obj=None) -> bool:
        return (super().has_change_permission(request, obj)
                or request.user.has_perm("support.manage_saved_replies"))

    def has_delete_permission(self, request, obj=None) -> bool:
        return (super().has_delete_permission(request, obj)
                or request.user.has_perm("support.manage_saved_replies"))


@admin.register(SlaTarget)
class SlaTargetAdmin(admin.ModelAdmin):
    list_display = ["merchant_or_default", "priority", "first_response", "resolution"]
    list_filter = ["priority"]
    list_select_related = ["merchant"]
    fields = ["merchant", "priority", "first_response", "resolution"]
    raw_id_fields = ["merchant"]
    show_facets = admin.ShowFacets.NEVER
    ordering = ["merchant__code", "priority"]

    @admin.display(description=gettext_lazy("merchant"), ordering="merchant__code")
    def merchant_or_default(self, obj: SlaTarget) -> str:
        return str(obj.merchant) if obj.merchant_id else _("default (every merchant)")
