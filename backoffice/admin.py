"""The staff side of the admin: the order worklist, the order page and guarded actions.

Models of `orders` keep their read-mostly admin in `orders/admin.py`; the order itself is
registered here because its staff tools reach across apps (tickets live in `support`).
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from orders.admin import AttemptInline, EventInline, ExactSearchMixin
from orders.models import Order


@admin.register(Order)
class OrderAdmin(ExactSearchMixin, admin.ModelAdmin):
    list_display = ["reference", "merchant_code", "status", "money", "submitted_at", "stuck_since", "stuck_cause",
                    "needs_review"]
    list_filter = ["status", "stuck_category", "stuck_cause", "needs_review"]
    list_select_related = ["merchant"]
    exact_search_fields = ("reference", "customer_email", "attempts__provider_reference")
    search_help_text = _("Exact order reference, provider reference or customer email.")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    readonly_fields = [
        "merchant", "reference", "amount", "currency", "captured_amount", "status", "submitted_at",
        "status_changed_at", "updated_at", "stuck_since", "stuck_cause", "stuck_category", "needs_review",
        "resolved_at", "receipt_number", "dispatch_number",
    ]
    fieldsets = [
        (None, {"fields": ["merchant", "reference", "status", "amount", "currency", "captured_amount"]}),
        (_("Customer"), {"fields": ["customer_name", "customer_email", "customer_phone", "shipping_address"]}),
        (_("Unreturned"), {"fields": ["stuck_since", "stuck_cause", "stuck_category", "needs_review", "resolved_at"]}),
        (_("Timing"), {"fields": ["submitted_at", "status_changed_at", "updated_at"]}),
        (_("Fulfilment"), {"fields": ["receipt_number", "dispatch_number"]}),
    ]
    inlines = [AttemptInline, EventInline]

    @admin.display(description=_("merchant"), ordering="merchant__code")
    def merchant_code(self, obj: Order) -> str:
        return obj.merchant.code

    @admin.display(description=_("amount"), ordering="amount")
    def money(self, obj: Order) -> str:
        return f"{obj.amount} {obj.currency}"

    def get_search_results(self, request, queryset, search_term):
        queryset, _dupes = super().get_search_results(request, queryset, search_term)
        # A provider reference joins attempts; one order may match through several.
        return queryset.distinct() if search_term.strip() else queryset, False

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


