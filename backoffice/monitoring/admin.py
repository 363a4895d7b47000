"""Admin of alert rules (editable), incidents (read-only facts, acknowledged by staff) and their
delivery log (read-only, "retry now"). Registered from `backoffice/admin.py`."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator, validate_email
from django.db.models import Count, Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from backoffice.monitoring.alert_signals import SIGNALS
from backoffice.monitoring.alerts import acknowledge_incident
from backoffice.monitoring.models import (
    AlertRule,
    DeliveryStatus,
    Incident,
    IncidentEvent,
    IncidentNotification,
    IncidentStatus,
    split_list,
)
from backoffice.monitoring.notify import retry_incident_notifications

_url = URLValidator(schemes=["http", "https"])


class AlertRuleForm(forms.ModelForm):
    window_minutes = forms.IntegerField(label=gettext_lazy("window (minutes)"), min_value=1,
                                        help_text=AlertRule._meta.get_field("window_minutes").help_text)
    labels = forms.JSONField(label=gettext_lazy("label filter"), required=False,
                             help_text=AlertRule._meta.get_field("labels").help_text)

    class Meta:
        model = AlertRule
        fields = ["name", "description", "enabled", "signal", "labels", "comparison", "threshold", "window_minutes",
                  "severity", "email_recipients", "email_leads", "webhook_urls"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3}),
                   "email_recipients": forms.Textarea(attrs={"rows": 3}),
                   "webhook_urls": forms.Textarea(attrs={"rows": 3})}

    def clean_labels(self) -> dict:
        labels = self.cleaned_data.get("labels")
        if labels in (None, ""):
            return {}
        if not isinstance(labels, dict):
            raise ValidationError(_('Write the labels as a JSON object, e.g. {"provider": "sandbox"}.'))
        for name, value in labels.items():
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise ValidationError(_("The value of label %(name)s must be text.") % {"name": name})
        return {name: str(value) for name, value in labels.items()}

    def clean_email_recipients(self) -> str:
        entries = split_list(self.cleaned_data.get("email_recipients", ""))
        for entry in entries:
            try:
                validate_email(entry)
            except ValidationError:
                raise ValidationError(_("%(entry)s is not an email address.") % {"entry": entry}) from None
        return "\n".join(entries)

    def clean_webhook_urls(self) -> str:
        entries = split_list(self.cleaned_data.get("webhook_urls", "").replace(",", "\n"))
        for entry in entries:
            try:
                _url(entry)
            except ValidationError:
                raise ValidationError(_("%(entry)s is not an http or https URL.") % {"entry": entry}) from None
        return "\n".join(entries)

    def clean(self):
        cleaned = super().clean()
        signal = SIGNALS.get(cleaned.get("signal") or "")
        labels = cleaned.get("labels") or {}
        if signal is not None and labels:
            unknown = sorted(set(labels) - set(signal.label_names))
            if unknown:
                allowed = ", ".join(signal.label_names) or _("none")
                self.add_error("labels", _("The signal %(signal)s has no label %(labels)s (its labels: %(allowed)s).")
                               % {"signal": signal.name, "labels": ", ".join(unknown), "allowed": allowed})
        return cleaned


@admin.display(description=gettext_lazy("condition"))
def _condition(rule: AlertRule) -> str:
    return f"{rule.get_comparison_display()} {rule.threshold:g}"


class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ["name", "signal", _condition, "window_minutes", "severity", "enabled", "open_incidents"]
    list_filter = ["enabled", "severity", "signal"]
    search_fields = ["name"]
    readonly_fields = ["key", "signal_help", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "key", "description", "enabled", "severity"]}),
        (gettext_lazy("Condition"), {"fields": ["signal", "signal_help", "labels", "comparison", "threshold",
                                                "window_minutes"]}),
        (gettext_lazy("Channels"), {"fields": ["email_recipients", "email_leads", "webhook_urls"]}),
        (gettext_lazy("History"), {"fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            open_count=Count("incidents", filter=Q(incidents__status=IncidentStatus.OPEN))
        )

    @admin.display(description=gettext_lazy("open incidents"), ordering="open_count")
    def open_incidents(self, rule: AlertRule):
        if not rule.open_count:
            return "0"
        url = reverse("admin:backoffice_incident_changelist") + f"?rule__id__exact={rule.pk}&status__exact=open"
        return format_html('<a href="{}"><strong>{}</strong></a>', url, rule.open_count)

    @admin.display(description=gettext_lazy("available signals"))
    def signal_help(self, rule: AlertRule | None):
        rows = format_html_join(
            "", "<li><strong>{}</strong> (<code>{}</code>): {} {}</li>",
            ((signal.label, signal.name, signal.description,
              _("Labels: %(labels)s.") % {"labels": ", ".join(signal.label_names) or _("none")})
             for signal in SIGNALS.values()),
        )
        return format_html("<ul>{}</ul>", rows)

    def has_delete_permission(self, request, obj=None) -> bool:
        # An installed default comes back after the next migrate if deleted: disable it instead.
        if obj is not None and obj.key:
            return False
        return super().has_delete_permission(request, obj)


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    fields = ["at", "kind", "value", "actor", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = gettext_lazy("History")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class IncidentNotificationInline(admin.TabularInline):
    model = IncidentNotification
    fields = ["event", "channel", "target", "status", "attempts", "next_attempt_at", "sent_at", "last_error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = gettext_lazy("Notifications (delivery log)")
    ordering = ["created_at", "id"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("event")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class StatusFilter(admin.SimpleListFilter):
    title = gettext_lazy("status")
    parameter_name = "status__exact"

    def lookups(self, request, model_admin):
        return IncidentStatus.choices

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


class IncidentAdmin(admin.ModelAdmin):
    list_display = ["summary", "status_badge", "severity", "rule", "opened_at", "resolved_at", "last_value",
                    "acknowledged"]
    list_filter = [StatusFilter, "severity", "rule"]
    list_select_related = ["rule", "acknowledged_by"]
    readonly_fields = ["summary", "rule", "status", "severity", "labels", "threshold", "last_value", "opened_at",
                       "resolved_at", "last_evaluated_at", "acknowledged_at", "acknowledged_by"]
    fields = readonly_fields
    inlines = [IncidentEventInline, IncidentNotificationInline]
    actions = ["acknowledge_selected"]
    change_form_template = "admin/monitoring/incident/change_form.html"
    ordering = ["status", "-opened_at"]  # open first: "open" < "resolved"

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, incident: Incident):
        colour = "#ba2121" if incident.is_open else "#417690"
        return format_html('<strong style="color:{}">{}</strong>', colour, incident.get_status_display())

    @admin.display(description=gettext_lazy("acknowledged"))
    def acknowledged(self, incident: Incident):
        if incident.acknowledged_at is None:
            return "–"
        who = incident.acknowledged_by.get_username() if incident.acknowledged_by else _("someone")
        when = date_format(timezone.localtime(incident.acknowledged_at), "SHORT_DATETIME_FORMAT")
        return _("%(who)s at %(time)s") % {"who": who, "time": when}

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # facts only; acknowledging has its own permission and endpoint

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_acknowledge_permission(self, request) -> bool:
        return request.user.has_perm("backoffice.acknowledge_incident")

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("backoffice.retry_incidentnotification")

    @admin.action(description=gettext_lazy("Acknowledge the selected incidents"), permissions=["acknowledge"])
    def acknowledge_selected(self, request, queryset):
        done = sum(acknowledge_incident(incident_id=pk, user=request.user)
                   for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, ngettext("%(count)d incident acknowledged.", "%(count)d incidents acknowledged.",
                                            done) % {"count": done}, messages.SUCCESS)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:incident_id>/acknowledge/", view(self.acknowledge_view), name="backoffice_incident_acknowledge"),
            path("<int:incident_id>/retry-notifications/", view(self.retry_view),
                 name="backoffice_incident_retry_notifications"),
            *super().get_urls(),
        ]

    def acknowledge_view(self, request, incident_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_acknowledge_permission(request):
            raise PermissionDenied
        incident = get_object_or_404(Incident, pk=incident_id)
        if acknowledge_incident(incident_id=incident.pk, user=request.user):
            self.message_user(request, _("Incident acknowledged."), messages.SUCCESS)
        else:
            self.message_user(request, _("The incident was already acknowledged."), messages.WARNING)
        return HttpResponseRedirect(reverse("admin:backoffice_incident_change", args=[incident.pk]))

    def retry_view(self, request, incident_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_retry_permission(request):
            raise PermissionDenied
        incident = get_object_or_404(Incident, pk=incident_id)
        ids = list(incident.notifications.values_list("pk", flat=True))
        count = retry_incident_notifications(notification_ids=ids)
        self.message_user(request, ngettext("%(count)d notification will be sent again within a minute.",
                                            "%(count)d notifications will be sent again within a minute.", count)
                          % {"count": count}, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:backoffice_incident_change", args=[incident.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        incident = self.get_object(request, object_id)
        extra = {
            "can_acknowledge": bool(incident and incident.acknowledged_at is None
                                    and self.has_acknowledge_permission(request)),
            "can_retry": bool(incident and self.has_retry_permission(request) and incident.notifications.filter(
                status__in=[DeliveryStatus.FAILED, DeliveryStatus.PENDING]).exists()),
        }
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})


class IncidentNotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "incident", "event_kind", "channel", "target", "status", "attempts",
                    "next_attempt_at", "sent_at"]
    list_filter = ["status", "channel"]
    list_select_related = ["incident", "event"]
    readonly_fields = ["incident", "event", "channel", "target", "status", "attempts", "next_attempt_at", "sent_at",
                       "last_error", "subject", "body", "payload", "created_at"]
    fields = readonly_fields
    actions = ["retry_now"]

    @admin.display(description=gettext_lazy("event"))
    def event_kind(self, row: IncidentNotification):
        return row.event.get_kind_display()

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("backoffice.retry_incidentnotification")

    @admin.action(description=gettext_lazy("Retry now"), permissions=["retry"])
    def retry_now(self, request, queryset):
        count = retry_incident_notifications(notification_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, ngettext("%(count)d notification will be sent again within a minute.",
                                            "%(count)d notifications will be sent again within a minute.", count)
                          % {"count": count}, messages.SUCCESS)


def register(site: admin.AdminSite) -> None:
    site.register(AlertRule, AlertRuleAdmin)
    site.register(Incident, IncidentAdmin)
    site.register(IncidentNotification, IncidentNotificationAdmin)
