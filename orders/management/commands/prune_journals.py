from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from orders.retention import prune_journals


class Command(BaseCommand):
    help = _("Empty the raw bodies of provider callbacks and the responses of checks older than their retention "
             "periods (RETENTION_CALLBACK_DAYS, RETENTION_CHECK_DAYS); the rows and the order events stay.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help=_("Count what would be pruned; change nothing."))
        parser.add_argument("--from-start", action="store_true",
                            help=_("Also read the rows before where the last run got through."))
        parser.add_argument("--batch-size", type=int, default=1000, help=_("Rows per UPDATE."))
        parser.add_argument("--time-budget", type=float, default=3600.0,
                            help=_("Stop after this many seconds; the next run goes on from there."))

    def handle(self, *args, dry_run: bool, from_start: bool, batch_size: int, time_budget: float, **options) -> None:
        report = prune_journals(dry_run=dry_run, from_start=from_start, batch_size=batch_size, time_budget=time_budget)
        values = {
            "callbacks": report.callbacks, "checks": report.checks, "seconds": report.seconds,
            "callback_cutoff": f"{report.callback_cutoff:%Y-%m-%d %H:%M}",
            "check_cutoff": f"{report.check_cutoff:%Y-%m-%d %H:%M}",
        }
        if dry_run:
            self.stdout.write(_("Would prune %(callbacks)d callback bodies (received before %(callback_cutoff)s) and "
                                "%(checks)d check responses (checks before %(check_cutoff)s).") % values)
            return
        self.stdout.write(_("Pruned %(callbacks)d callback bodies (received before %(callback_cutoff)s) and "
                            "%(checks)d check responses (checks before %(check_cutoff)s) in %(seconds).1f s.")
                          % values)
        if not report.complete:
            self.stdout.write(_("The time budget ran out; the next run goes on from where this one stopped."))
