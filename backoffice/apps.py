from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = _("Back-office")

    def ready(self) -> None:
        from backoffice import checks  # noqa: F401 - registers the system checks
        from backoffice.monitoring.alerts import install_default_rules_after_migrate
        from backoffice.roles import ensure_staff_groups
        from orders.schedules import register_schedule

        register_schedule(name="cluster-heartbeat", func="backoffice.monitoring.tasks.cluster_heartbeat", minutes=1)
        # Daily: callback bodies and check responses past their retention period (orders.retention).
        register_schedule(name="prune-journals", func="backoffice.monitoring.retention.prune_journals_task",
                          minutes=24 * 60)
        register_schedule(name="evaluate-alerts", func="backoffice.monitoring.tasks.evaluate_alerts", minutes=1)
        register_schedule(name="send-incident-notifications",
                          func="backoffice.monitoring.tasks.send_incident_notifications", minutes=1)

        # After every migrate, so groups pick up the permissions of newly added models.
        post_migrate.connect(ensure_staff_groups, dispatch_uid="backoffice.ensure_staff_groups")
        # The default alert rules: created once, never overwritten (docs/monitoring.md).
        post_migrate.connect(install_default_rules_after_migrate, dispatch_uid="backoffice.install_default_rules")


class StaffAdminConfig(AdminConfig):
    default_site = "backoffice.admin_site.StaffAdminSite"
