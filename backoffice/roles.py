"""Staff groups and the permissions each one holds.

Kept in step with the models after every migrate, so a permission added by a later
migration reaches its group without a hand-written data migration.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

from support.selectors import AGENT_GROUP, LEAD_GROUP

# group name -> permission codenames ("app_label.codename")
_READ = [
    "orders.view_merchant",
    "orders.view_merchantmembership",
    "orders.view_order",
    "orders.view_paymentattempt",
    "orders.view_paymentcheck",
    "orders.view_providercallback",
    "orders.view_orderevent",
    "orders.view_paymentapproval",
    "orders.view_recheckpolicy",
]
# Alerts (docs/monitoring.md): every staff group sees incidents, rules and the delivery log,
# and acknowledges incidents (the system page needs view_incident); leads manage the rules and
# retry deliveries.
_INCIDENTS = [
    "backoffice.view_incident",
    "backoffice.view_incidentevent",
    "backoffice.view_incidentnotification",
    "backoffice.view_alertrule",
    "backoffice.acknowledge_incident",
]
_MANAGE_ALERTS = [
    "backoffice.add_alertrule",
    "backoffice.change_alertrule",
    "backoffice.delete_alertrule",
    "backoffice.retry_incidentnotification",
]
# Fixing a customer's address or phone is editing the order; status and money stay read-only.
_AGENT = [*_READ, *_INCIDENTS, "orders.change_order", "orders.check_now", "orders.add_note", "orders.assign_order",
          "orders.retry_confirmation", "orders.cancel_order", "orders.mark_paid", "orders.mark_failed",
          "support.add_ticket", "support.change_ticket", "support.view_ticket", "support.reply_ticket"]

# group name -> permission codenames ("app_label.codename")
STAFF_GROUPS: dict[str, list[str]] = {
    AGENT_GROUP: _AGENT,
    # Leads are the second pair of eyes for mark-paid above a merchant's limit.
    LEAD_GROUP: [*_AGENT, "orders.approve_mark_paid", *_MANAGE_ALERTS],
    gettext_noop("Payments operations"): [
        *_READ,
        *_INCIDENTS,
        "orders.change_merchant",
        "orders.add_merchantmembership",
        "orders.change_merchantmembership",
        "orders.delete_merchantmembership",
        "orders.change_providercallback",
        "orders.add_recheckpolicy",
        "orders.change_recheckpolicy",
        "orders.delete_recheckpolicy",
        "orders.check_now",
        "orders.add_note",
        "orders.mark_paid",
        "orders.mark_failed",
        "orders.approve_mark_paid",
        "orders.retry_confirmation",
    ],
}


def ensure_staff_groups(**kwargs) -> None:
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    if kwargs.get("app_config") is not None and kwargs["app_config"].label != "orders":
        return
    # Receivers run in the order they were connected, and ours may run before auth creates the
    # permissions of a model added by this very migrate: create them first (idempotent).
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=kwargs.get("using", "default"))

    for name, codenames in STAFF_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for dotted in codenames:
            app_label, codename = dotted.split(".", 1)
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:  # not yet created on the very first migrate of an app
                wanted.append(perm)
        group.permissions.set(wanted)
