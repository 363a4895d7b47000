"""Staff users in the groups of `backoffice.roles` (created by post_migrate), and small
helpers for driving the staff admin with the test client."""

from __future__ import annotations

from html.parser import HTMLParser

from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse

from tests.orders.factories import StaffUserFactory, UserFactory

AGENT = "Support agent"
LEAD = "Support lead"
PAYMENTS = "Payments operations"


def staff_in(group: str, **kwargs):
    """An active staff user who holds exactly the permissions of one staff group."""
    user = StaffUserFactory(**kwargs)
    user.groups.add(Group.objects.get(name=group))
    return user


def non_staff_in(group: str, **kwargs):
    """A user in a staff group who is not marked staff: the admin must not let them in."""
    user = UserFactory(**kwargs)
    user.groups.add(Group.objects.get(name=group))
    return user


def order_url(order, action: str = "change") -> str:
    return reverse(f"admin:orders_order_{action}", args=[order.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def staff_with_perms(*codenames: str, **kwargs):
    """A staff user in no group, holding only the given `orders` permissions."""
    from django.contrib.auth.models import Permission

    user = StaffUserFactory(**kwargs)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="orders", codename__in=codenames))
    return user


class _FormReader(HTMLParser):
    def __init__(self, action: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.action = action
        self.inside = False
        self.textarea: str | None = None
        self.fields: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and not self.inside and (self.action is None or attrs.get("action") == self.action):
            self.inside = True
        elif self.inside and tag == "input" and attrs.get("name") and attrs.get("type") in ("hidden", "text", None):
            self.fields.setdefault(attrs["name"], []).append(attrs.get("value") or "")
        elif self.inside and tag == "textarea" and attrs.get("name"):
            self.textarea = attrs["name"]
            self.fields.setdefault(self.textarea, []).append("")

    def handle_data(self, data):
        if self.textarea:
            self.fields[self.textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self.textarea = None
        elif tag == "form" and self.inside:
            self.inside = False
            self.action = "\0done"  # only the first matching form


def form_fields(html: str, action: str | None = None) -> dict[str, list[str]]:
    """The fields a browser would submit from the first form (with this action): what the
    page really carries over to the next step, not what a test assumes it does."""
    reader = _FormReader(action)
    reader.feed(html)
    return reader.fields
