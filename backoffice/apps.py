from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = _("Back-office")

    def ready(self) -> None:
        from backoffice.roles import ensure_staff_groups
        from orders.schedules import register_schedule

        register_schedule(name="cluster-heartbeat", func="backoffice.monitoring.tasks.cluster_heartbeat", minutes=1)

        # After every migrate, so groups pick up the permissions of newly added models.
        post_migrate.connect(ensure_staff_groups, dispatch_uid="backoffice.ensure_staff_groups")


class StaffAdminConfig(AdminConfig):
    default_site = "backoffice.admin_site.StaffAdminSite"
