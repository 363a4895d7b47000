"""The staff admin site: Django's admin with an operations dashboard as its home page and
a few staff tools (access explainer, approvals) beside the model pages."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.utils.translation import gettext_lazy as _


class StaffAdminSite(admin.AdminSite):
    site_header = _("Order Recovery Desk")
    site_title = _("Order Recovery Desk")
    index_title = _("Operations dashboard")
    index_template = "admin/dashboard.html"

    def index(self, request, extra_context=None):
        from backoffice.dashboard import dashboard_context

        from backoffice.monitoring.system_page import system_link_context

        context = {**dashboard_context(request), **system_link_context(request), **(extra_context or {})}
        return super().index(request, extra_context=context)

    def get_urls(self):
        from backoffice import staff_views
        from backoffice.monitoring.system_page import system_view

        extra = [
            path("access-explainer/", self.admin_view(staff_views.access_explainer), name="access_explainer"),
            path("system/", self.admin_view(system_view), name="system"),
        ]
        return extra + super().get_urls()
