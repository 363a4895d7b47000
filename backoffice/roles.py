"""Staff groups and the permissions each one holds.

Kept in step with the models after every migrate, so a permission added by a later
migration reaches its group without a hand-written data migration.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

# group name -> permission codenames ("app_label.codename")
STAFF_GROUPS: dict[str, list[str]] = {
    gettext_noop("Support agent"): [
        "orders.view_merchant",
        "orders.view_merchantmembership",
        "orders.view_order",
        "orders.view_paymentattempt",
        "orders.view_paymentcheck",
        "orders.view_providercallback",
        "orders.view_orderevent",
    ],
    gettext_noop("Support lead"): [
        "orders.view_merchant",
        "orders.view_merchantmembership",
        "orders.view_order",
        "orders.view_paymentattempt",
        "orders.view_paymentcheck",
        "orders.view_providercallback",
        "orders.view_orderevent",
    ],
    gettext_noop("Payments operations"): [
        "orders.view_merchant",
        "orders.change_merchant",
        "orders.view_merchantmembership",
        "orders.add_merchantmembership",
        "orders.change_merchantmembership",
        "orders.delete_merchantmembership",
        "orders.view_order",
        "orders.view_paymentattempt",
        "orders.view_paymentcheck",
        "orders.view_providercallback",
        "orders.view_orderevent",
        "orders.change_providercallback",
        "orders.view_recheckpolicy",
        "orders.add_recheckpolicy",
        "orders.change_recheckpolicy",
        "orders.delete_recheckpolicy",
    ],
}


def ensure_staff_groups(**kwargs) -> None:
    from django.contrib.auth.models import Group, Permission

    for name, codenames in STAFF_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for dotted in codenames:
            app_label, codename = dotted.split(".", 1)
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:  # not yet created on the very first migrate of an app
                wanted.append(perm)
        group.permissions.add(*wanted)
