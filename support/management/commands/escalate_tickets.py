import time

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from support.services import escalate_overdue_tickets


class Command(BaseCommand):
    help = _("Escalate the open tickets whose service level passed.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help=_("Escalate what is overdue now, then exit."))
        parser.add_argument("--interval", type=float, default=60.0, help=_("Seconds between passes without --once."))

    def handle(self, *args, once: bool, interval: float, **options) -> None:
        try:
            while True:
                count = escalate_overdue_tickets()
                self.stdout.write(_("%(count)d tickets escalated.") % {"count": count})
                if once:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write(_("Stopped."))
