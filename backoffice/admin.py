"""The staff side of the admin: the order worklist, the order page and guarded actions.

Models of `orders` keep their read-mostly admin in `orders/admin.py`; the order itself is
registered here because its staff tools reach across apps (tickets live in `support`). The
ticket admin (backoffice/ticket_admin.py) is here for the same reason: beside the
conversation it shows the order's diagnosis panel and timeline.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from backoffice import ticket_admin  # noqa: F401 - registers the ticket admins
from backoffice.monitoring.admin import register as register_monitoring_admin
from backoffice.order_actions import OrderActionsMixin
from backoffice.worklist import WorklistMixin
from orders.admin import AttemptInline
from orders.models import Order


@admin.register(Order)
class OrderAdmin(WorklistMixin, OrderActionsMixin, admin.ModelAdmin):
    # The worklist (columns, filters, search, paging, CSV export) comes from WorklistMixin.
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
    # Events, checks and callbacks show on the order page's timeline instead of inlines.
    inlines = [AttemptInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# Alert rules, incidents and their delivery log (docs/monitoring.md).
register_monitoring_admin(admin.site)
