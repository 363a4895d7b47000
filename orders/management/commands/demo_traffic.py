"""A steady trickle of new orders paid at the sandbox provider, so the demo moves on its own.

Each order is created through the services and its payment is started at the sandbox over
HTTP, exactly as a merchant's checkout would; the sandbox then succeeds, declines, loses
callbacks or times out according to its knobs, and the engine has to sort it out.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.translation import gettext as _
from faker import Faker

from orders.actors import Actor
from orders.exceptions import Conflict
from orders.models import Merchant
from orders.policy import first_check_at
from orders.providers.base import ProviderError
from orders.providers.registry import get_provider, is_configured
from orders.services import create_order, create_payment_attempt
from orders.states import AttemptStatus


class Command(BaseCommand):
    help = _("Create demo orders and pay them at the sandbox provider, one every few seconds.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--provider", default="sandbox")
        parser.add_argument("--merchant", default="", help=_("Merchant code (default: every active merchant in turn)."))
        parser.add_argument("--interval", type=float, default=5.0, help=_("Seconds between orders."))
        parser.add_argument("--count", type=int, default=0, help=_("Stop after this many orders (0: never)."))
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, provider: str, merchant: str, interval: float, count: int, seed, **options) -> None:
        if not is_configured(provider):
            raise CommandError(_("Provider %(name)s is not configured (PAYMENT_PROVIDERS).") % {"name": provider})
        merchants = Merchant.objects.filter(active=True)
        if merchant:
            merchants = merchants.filter(code=merchant)
        merchants = list(merchants.order_by("code"))
        if not merchants:
            raise CommandError(_("No active merchant to create orders for; run seed_demo first."))
        rng = random.Random(seed)
        fake = Faker(["zh_CN", "en_US"])
        if seed is not None:
            fake.seed_instance(seed)
        adapter = get_provider(provider)
        made = 0
        while not count or made < count:
            shop = merchants[made % len(merchants)]
            self.one_order(shop, adapter, provider, rng, fake)
            made += 1
            time.sleep(interval)

    def one_order(self, shop: Merchant, adapter, provider: str, rng: random.Random, fake: Faker) -> None:
        now = timezone.now()
        reference = f"LIVE-{now:%y%m%d%H%M%S}-{rng.randrange(10**6):06d}"
        amount = (Decimal(rng.randrange(500, 99_900)) / 100).quantize(Decimal("0.01"))
        order = create_order(
            merchant=shop, reference=reference, amount=amount, currency=shop.default_currency,
            customer_name=fake.name(), customer_email=fake.email(), customer_phone=fake.phone_number(),
            shipping_address=fake.address().replace("\n", ", "), actor=Actor.system("demo-traffic"),
        )
        idempotency_key = f"{shop.code}-{reference}"
        try:
            result = adapter.create_payment(
                idempotency_key=idempotency_key, amount=amount, currency=order.currency,
                order_reference=reference, merchant=shop.code,
            )
            status, provider_reference = AttemptStatus.PENDING, result.provider_reference
        except ProviderError as exc:
            # The customer pressed pay and the provider did not answer: money may have moved.
            status, provider_reference = AttemptStatus.UNKNOWN, ""
            self.stderr.write(_("%(reference)s: payment start failed (%(kind)s); result unknown.")
                              % {"reference": reference, "kind": exc.kind})
        try:
            create_payment_attempt(
                order=order, provider=provider, provider_reference=provider_reference, idempotency_key=idempotency_key,
                status=status, actor=Actor.system("demo-traffic"),
                next_check_at=first_check_at(provider, shop.pk, status, now=now),
            )
        except Conflict:
            # The provider's callback arrived first and the payment was already recorded from it.
            status = _("recorded from the provider's callback")
        self.stdout.write(_("%(reference)s: %(amount)s %(currency)s at %(merchant)s, payment %(status)s")
                          % {"reference": reference, "amount": amount, "currency": order.currency,
                             "merchant": shop.code, "status": status})
