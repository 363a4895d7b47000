"""Signed links to the customer status page.

The link carries a signed copy of the order's random `status_token`, never its id: the
signature makes a guessed or edited link fail, the timestamp makes an old link expire,
and rotating `status_token` (a new random value) revokes every link sent before.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse

from orders.models import Order

# Its own salt: a value signed for any other purpose never verifies here.
SALT = "orders.status_links.track"


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def status_token(order: Order) -> str:
    """A URL-safe, signed, timestamped token for the order's status page."""
    return _signer().sign(order.status_token)


def status_url(order: Order) -> str:
    """The absolute link to the order's status page, for customer emails."""
    return settings.SITE_URL + reverse("track-order", args=[status_token(order)])


def order_for_token(token: str, *, max_age_days: int | None = None) -> Order | None:
    """The order a link points to, or None for a bad signature, an expired link or an unknown order."""
    if max_age_days is None:
        max_age_days = settings.TRACK_LINK_MAX_AGE_DAYS
    try:
        raw = _signer().unsign(token, max_age=max_age_days * 86400)
    except (signing.BadSignature, ValueError, TypeError):
        # SignatureExpired is a BadSignature.
        return None
    if not raw:
        return None
    return Order.objects.select_related("merchant").filter(status_token=raw).first()
