"""The outbox in the admin: what was sent to whom, what failed and why. Rows are written and
sent only by `support.notifications`; here they are read, and "Retry now" is the one action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from orders.admin import ExactSearchMixin
from support.models import Notification
from support.notifications import retry_notifications


@admin.register(Notification)
class NotificationAdmin(ExactSearchMixin, admin.ModelAdmin):
    list_display = ["status", "kind", "recipient", "order", "attempts", "next_attempt_at", "sent_at", "created_at"]
    list_filter = ["status", "kind"]
    list_select_related = ["order"]
    # Emails compare without case; references exactly (the order index serves them).
    exact_search_fields = ("recipient__iexact", "order__reference")
    search_help_text = _("Exact recipient email or order reference.")
    show_full_result_count = False
    actions = ["retry_now"]
    fields = [
        "kind", "status", "order", "ticket_message", "recipient", "language", "dedupe_key", "attempts",
        "next_attempt_at", "last_error", "created_at", "sent_at", "subject", "body",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # The change permission allows "Retry now" on the list; a row itself is never edited
        # (saving the form would write back a status the sender may have changed meanwhile).
        return obj is None and super().has_change_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return super().has_view_permission(request)

    @admin.action(description=_("Retry now"), permissions=["change"])
    def retry_now(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        count = retry_notifications(notification_ids=ids)
        skipped = len(ids) - count
        self.message_user(
            request,
            ngettext(
                "%(count)d notification will be sent again shortly.",
                "%(count)d notifications will be sent again shortly.",
                count,
            ) % {"count": count},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d notification was skipped: it is being sent or was sent already.",
                    "%(count)d notifications were skipped: they are being sent or were sent already.",
                    skipped,
                ) % {"count": skipped},
                messages.WARNING,
            )
