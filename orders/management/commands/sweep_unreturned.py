from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from orders.sweep import sweep_unreturned


class Command(BaseCommand):
    help = _("Flag, diagnose, re-diagnose and unflag the orders that are due.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help=_("Sweep what is due now, then exit."))
        parser.add_argument("--interval", type=float, default=30.0, help=_("Seconds between sweeps without --once."))

    def handle(self, *args, once: bool, interval: float, **options) -> None:
        import time

        while True:
            report = sweep_unreturned()
            c = report.counts
            self.stdout.write(
                _("%(orders)d orders looked at: %(flagged)d flagged, %(changed)d re-diagnosed, %(unflagged)d "
                  "unflagged; providers in outage: %(outage)s (%(seconds).2f s)")
                % {"orders": report.orders, "flagged": c.flagged, "changed": c.changed, "unflagged": c.unflagged,
                   "outage": ", ".join(sorted(report.outage_providers)) or _("none"), "seconds": report.seconds}
            )
            if once:
                return
            time.sleep(interval)
