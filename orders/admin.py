"""Read-mostly admin. Status, amounts and provider fields are read-only; orders and
payment records are never deleted; status changes arrive with the staff actions."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from orders import memberships
from orders.actors import Actor
from orders.exceptions import DomainError
from orders.models import (
    IdempotencyKey,
    MembershipRole,
    Merchant,
    MerchantMembership,
    OrderEvent,
    PaymentApproval,
    PaymentAttempt,
    PaymentCheck,
    ProviderCallback,
    RecheckPolicy,
)


class ReadOnlyAdminMixin:
    """Evidence models: visible, never added, edited or deleted by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ExactSearchMixin:
    """Search by exact value on indexed columns instead of `icontains` table scans."""

    exact_search_fields: tuple[str, ...] = ()
    search_help_text = _("Exact match.")

    def get_search_fields(self, request):
        return self.exact_search_fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        from django.db.models import Q

        query = Q()
        for field in self.exact_search_fields:
            query |= Q(**{field: term})
        return queryset.filter(query), False


class MembershipInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The merchant's members at a glance; changes go through the membership page, which
    records them (`orders.memberships`)."""

    model = MerchantMembership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "default_currency", "stuck_after", "escalate_after", "expire_after", "active"]
    list_filter = ["active"]
    search_fields = ["code", "name"]
    inlines = [MembershipInline]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MembershipAdminForm(forms.ModelForm):
    class Meta:
        model = MerchantMembership
        fields = ["user", "merchant", "role"]

    def clean(self):
        cleaned = super().clean()
        membership = self.instance
        user = cleaned.get("user")
        if not membership.pk and user is not None and not user.is_active:
            self.add_error("user", memberships.inactive_account_message())
        losing_manager = membership.pk and (
            membership.role == MembershipRole.MANAGER and cleaned.get("role") != MembershipRole.MANAGER
        )
        if losing_manager and memberships.is_last_manager(membership):
            raise forms.ValidationError(memberships.last_manager_message(membership))
        return cleaned


@admin.register(MerchantMembership)
class MerchantMembershipAdmin(admin.ModelAdmin):
    """Every add, role change and removal goes through `orders.memberships`, which records a
    `MembershipEvent` and keeps a merchant from losing its last manager, as in the portal."""

    form = MembershipAdminForm
    list_display = ["user", "merchant", "role", "created_at"]
    list_filter = ["role", "merchant"]
    list_select_related = ["user", "merchant"]
    autocomplete_fields = ["user", "merchant"]
    search_fields = ["user__username", "user__email", "merchant__code"]

    def get_readonly_fields(self, request, obj=None):
        # Who and where stay as they are; another person or merchant is another membership.
        return ["user", "merchant", "created_at"] if obj is not None else []

    def save_model(self, request, obj, form, change) -> None:
        actor = Actor.staff(request.user)
        if change:
            memberships.change_role(membership=obj.pk, role=obj.role, actor=actor)
        else:
            obj.pk = memberships.add_member(merchant=obj.merchant, user=obj.user, role=obj.role, actor=actor).pk

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # The admin's own "cannot delete" page names what stands in the way: a merchant whose
        # every active manager is among the selected memberships would be left without one.
        protected = [*protected, *memberships.managers_left_without(list(objs))]
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj) -> None:
        memberships.remove_member(membership=obj.pk, actor=Actor.staff(request.user))

    def delete_queryset(self, request, queryset) -> None:
        for membership in queryset:
            try:
                memberships.remove_member(membership=membership.pk, actor=Actor.staff(request.user))
            except DomainError as exc:
                messages.error(request, exc.message)


class AttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PaymentAttempt
    extra = 0
    fields = ["provider", "provider_reference", "amount", "currency", "status", "check_count", "last_checked_at",
              "next_check_at", "last_error_code"]
    readonly_fields = fields
    show_change_link = True


class EventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderEvent
    extra = 0
    fields = ["created_at", "kind", "actor_kind", "actor_user", "message"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]


class CheckInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PaymentCheck
    extra = 0
    fields = ["checked_at", "source", "reported_status", "reported_amount", "error_kind", "http_status", "latency_ms"]
    readonly_fields = fields
    ordering = ["-checked_at", "-id"]


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ReadOnlyAdminMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = ["__str__", "order", "provider", "status", "amount", "currency", "check_count", "next_check_at",
                    "last_error_code"]
    list_filter = ["provider", "status"]
    list_select_related = ["order", "order__merchant"]
    exact_search_fields = ("provider_reference", "idempotency_key", "order__reference")
    show_full_result_count = False
    inlines = [CheckInline]


@admin.register(PaymentCheck)
class PaymentCheckAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The check log, with each provider's error rate and p95 latency above it."""

    list_display = ["attempt", "source", "reported_status", "error_kind", "http_status", "latency_ms", "checked_at"]
    list_filter = ["source", "error_kind", "reported_status"]
    list_select_related = ["attempt"]
    show_full_result_count = False
    change_list_template = "admin/orders/paymentcheck/change_list.html"

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # The provider links of the health table; not a list filter, whose choices would
        # cost a SELECT DISTINCT over every check on each page.
        return lookup == "attempt__provider" or super().lookup_allowed(lookup, value, request)

    def changelist_view(self, request, extra_context=None):
        from datetime import timedelta

        from django.utils import timezone

        from orders.selectors import provider_check_stats

        now = timezone.now()
        context = {
            "provider_stats": [
                (_("Last hour"), provider_check_stats(since=now - timedelta(hours=1))),
                (_("Last 24 hours"), provider_check_stats(since=now - timedelta(hours=24))),
            ],
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)


@admin.register(ProviderCallback)
class ProviderCallbackAdmin(ReadOnlyAdminMixin, ExactSearchMixin, admin.ModelAdmin):
    list_display = ["event_id", "provider", "received_at", "signature_valid", "outcome", "processed_at"]
    list_filter = ["provider", "signature_valid", "outcome"]
    exact_search_fields = ("event_id",)
    show_full_result_count = False
    actions = ["replay"]

    @admin.action(description=_("Replay the selected verified callbacks"), permissions=["replay"])
    def replay(self, request, queryset):
        from orders.webhooks import process_callback

        done = failed = skipped = 0
        for callback in queryset.order_by("received_at", "pk"):
            if not callback.signature_valid:
                skipped += 1
            elif process_callback(callback):
                done += 1
            else:
                failed += 1
        self.message_user(
            request,
            _("%(done)d replayed, %(failed)d failed, %(skipped)d skipped (unverified callbacks are never applied).")
            % {"done": done, "failed": failed, "skipped": skipped},
            messages.WARNING if failed else messages.SUCCESS,
        )

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm("orders.change_providercallback")


@admin.register(RecheckPolicy)
class RecheckPolicyAdmin(admin.ModelAdmin):
    list_display = ["provider", "merchant", "pending_delays", "unknown_delays", "max_in_flight", "jitter"]
    list_filter = ["provider"]
    list_select_related = ["merchant"]
    autocomplete_fields = ["merchant"]


@admin.register(OrderEvent)
class OrderEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "order", "kind", "actor_kind", "actor_user", "message"]
    list_filter = ["kind", "actor_kind"]
    list_select_related = ["order", "actor_user"]
    show_full_result_count = False


@admin.register(PaymentApproval)
class PaymentApprovalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Mark-paid requests waiting for a second person; they are decided on the order page."""

    list_display = ["order", "amount", "currency", "provider_reference", "requested_by", "requested_at", "status",
                    "decided_by"]
    list_filter = ["status"]
    list_select_related = ["order", "order__merchant", "requested_by", "decided_by"]
    show_full_result_count = False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, ExactSearchMixin, admin.ModelAdmin):
    """API idempotency keys, for answering "why did my retry get that answer?"."""

    list_display = ["key", "owner", "method", "path", "status", "response_status", "created_at", "completed_at"]
    list_filter = ["status"]
    list_select_related = ["owner"]
    exact_search_fields = ("key",)
    show_full_result_count = False
