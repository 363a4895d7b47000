from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from orders.recheck import recheck_due


class Command(BaseCommand):
    help = _("Re-check payment attempts that are due with their providers.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help=_("Check what is due now, then exit."))
        parser.add_argument("--batch-size", type=int, default=200)
        parser.add_argument("--interval", type=float, default=10.0, help=_("Seconds between rounds without --once."))

    def handle(self, *args, once: bool, batch_size: int, interval: float, **options) -> None:
        import time

        while True:
            report = recheck_due(batch_size=batch_size)
            self.stdout.write(
                _("%(checked)d checked, %(errors)d provider errors, %(changed)d changed, %(skipped)d skipped "
                  "(%(seconds).2f s)")
                % {"checked": report.checked, "errors": report.errors, "changed": report.changed,
                   "skipped": report.skipped, "seconds": report.seconds}
            )
            if once:
                return
            time.sleep(interval)
